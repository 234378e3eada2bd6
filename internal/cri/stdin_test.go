package cri

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Over websocket the end of the stdin channel is never the client's: the
// session's stdin then waits for the session to end. Over SPDY the end is
// the client's and passes.
func TestStdinEndOverWebsocket(t *testing.T) {
	tests := []struct {
		name    string
		headers map[string]string
		endless bool
	}{
		{"spdy", map[string]string{"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}, false},
		{"websocket", map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/attach/token", nil)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			var ctx context.Context
			markWebsocket(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { ctx = r.Context() })).ServeHTTP(httptest.NewRecorder(), req)
			ctx, cancel := context.WithCancel(ctx)
			in := stdin(ctx, strings.NewReader("typed"))
			got := make(chan string, 1)
			go func() {
				b, _ := io.ReadAll(in)
				got <- string(b)
			}()
			select {
			case s := <-got:
				if tt.endless {
					t.Fatalf("stdin ended (%q) while the session goes on", s)
				}
				if s != "typed" {
					t.Errorf("stdin read %q", s)
				}
			case <-time.After(200 * time.Millisecond):
				if !tt.endless {
					t.Fatal("stdin did not end with the client's")
				}
				cancel()
				if s := <-got; s != "typed" {
					t.Errorf("stdin read %q", s)
				}
			}
			cancel()
		})
	}
}
