package image

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// A registry may quote what it was sent in the error it answers (a token
// server its form, a proxy its headers), and go-containerregistry quotes
// that body in its error: the error of a pull must still carry no
// credential, whether it came with the request or from the config.
func TestPullErrorHidesCredentials(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		echo := fmt.Sprintf("echo: authorization=%s query=%s body=%s", r.Header.Get("Authorization"), r.URL.RawQuery, body)
		if r.URL.Path != "/token" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="echo"`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": "UNAUTHORIZED", "message": echo}}})
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	const user, password, token = "bob", "pw+s3cr/t=1", "tok+s3cr/t=2"
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	tests := []struct {
		name string
		auth *Auth
		cfg  Registry
	}{
		{"request username and password", &Auth{Username: user, Password: password}, Registry{}},
		{"request auth", &Auth{Auth: basic}, Registry{}},
		{"request identity token", &Auth{IdentityToken: token}, Registry{}},
		{"request registry token", &Auth{RegistryToken: token}, Registry{}},
		{"config username and password", nil, Registry{Username: user, Password: password}},
		{"config auth", nil, Registry{Auth: basic}},
		{"config identity token", nil, Registry{IdentityToken: token}},
	}
	secrets := []string{password, token, basic, url.QueryEscape(password), url.QueryEscape(token)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Endpoints, cfg.SkipUpstream = []string{"http://" + host}, true
			dir := t.TempDir()
			s := newService(t, filepath.Join(dir, "images"), openDB(t, dir), map[string]Registry{"*": cfg})
			_, err := s.Pull(context.Background(), "private:1", tt.auth)
			if !errdefs.IsUnauthorized(err) {
				t.Fatalf("pull = %v, want Unauthenticated", err)
			}
			if !strings.Contains(err.Error(), "echo:") {
				t.Fatalf("the registry's answer is not in the error, so this test proves nothing: %v", err)
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("the error shows %q: %v", s, err)
				}
			}
		})
	}
}

func TestCredentialScrubber(t *testing.T) {
	auth := &Auth{Username: "bob", Password: `p"w\1`, IdentityToken: "tok", Auth: base64.StdEncoding.EncodeToString([]byte("al:ice-pw"))}
	scrub := credentialScrubber(nil, auth, &Auth{RegistryToken: "tok-longer"})
	for in, want := range map[string]string{
		`password p"w\1`:          "password <redacted>",
		`json "p\"w\\1"`:          `json "<redacted>"`,
		"form p%22w%5C1":          "form <redacted>",
		"basic Ym9iOnAidylc1MQ==": "basic Ym9iOnAidylc1MQ==", // not that user's
		"basic " + base64.StdEncoding.EncodeToString([]byte(`bob:p"w\1`)): "basic <redacted>",
		"auth " + auth.Auth:      "auth <redacted>",
		"auth's password ice-pw": "auth's password <redacted>",
		"values tok-longer tok":  "values <redacted> <redacted>",
		"user bob":               "user bob",
	} {
		if got := scrub.Replace(in); got != want {
			t.Errorf("scrub(%q) = %q, want %q", in, got, want)
		}
	}
}
