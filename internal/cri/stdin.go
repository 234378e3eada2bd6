package cri

import (
	"context"
	"io"
	"net/http"

	"k8s.io/streaming/pkg/httpstream/wsstream"
)

// The end of an attached client's stdin ends its session (the monitor
// does that, as containerd does). Over SPDY a client without stdin has no
// stdin stream, and its end is the client's. Over websocket, protocols up
// to v4 (all the streaming server speaks) cannot say that stdin ended: the
// stdin channel of a client that asked for none reads EOF at once, and
// one that asked for it reads EOF only when the connection goes.

type websocketKey struct{}

// markWebsocket tells the runtime's callbacks, through the request's
// context, that the client speaks websocket.
func markWebsocket(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wsstream.IsWebSocketRequest(r) {
			r = r.WithContext(context.WithValue(r.Context(), websocketKey{}, true))
		}
		h.ServeHTTP(w, r)
	})
}

// stdin is the attached client's stdin as the session should see it: over
// websocket, one whose end never ends the session, since it is never the
// client's doing.
func stdin(ctx context.Context, in io.Reader) io.Reader {
	if in == nil || ctx.Value(websocketKey{}) == nil {
		return in
	}
	return endless{ctx: ctx, r: in}
}

// endless reads r, and at its end waits for ctx (the session) to end.
type endless struct {
	ctx context.Context
	r   io.Reader
}

func (e endless) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		if n > 0 {
			return n, nil
		}
		<-e.ctx.Done()
	}
	return n, err
}
