package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// stallError is a request of a pull that went the progress timeout
// without an answer or a byte of its body. It is a deadline, not a
// temporary error: go-containerregistry does not retry it.
type stallError struct {
	what    string
	timeout time.Duration
}

func (e *stallError) Error() string {
	return fmt.Sprintf("%s: no progress for %s (image_pull_progress_timeout)", e.what, e.timeout)
}

func (e *stallError) Unwrap() error { return context.DeadlineExceeded }

// watchdogTransport gives every request of a pull (the ping, token
// fetches, the manifest, the config, each layer blob) a watchdog that
// cancels the request's context when neither its response nor a byte of
// its body came for the timeout. Every read of the body resets it; one
// timer per request, no goroutine per read: a cancelled request ends the
// read in progress in the caller's goroutine, so nothing writes into a
// buffer after its read returned.
type watchdogTransport struct {
	inner   http.RoundTripper
	timeout time.Duration
}

func (t *watchdogTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	w := startWatchdog(req.Context(), t.timeout, describeRequest(req))
	resp, err := t.inner.RoundTrip(req.WithContext(w.ctx))
	if err != nil {
		w.stop()
		return nil, w.explain(err)
	}
	resp.Body = &watchedBody{body: resp.Body, w: w}
	return resp, nil
}

// CloseIdleConnections closes the idle connections of the inner
// transport: the end of a pull ends its connections and their goroutines.
func (t *watchdogTransport) CloseIdleConnections() {
	if c, ok := t.inner.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// watchdog cancels ctx with a stallError unless kicked within timeout.
type watchdog struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timer   *time.Timer
	timeout time.Duration
}

func startWatchdog(parent context.Context, timeout time.Duration, what string) *watchdog {
	ctx, cancel := context.WithCancelCause(parent)
	stall := &stallError{what: what, timeout: timeout}
	return &watchdog{ctx: ctx, cancel: cancel, timeout: timeout,
		timer: time.AfterFunc(timeout, func() { cancel(stall) })}
}

// kick records progress. A kick after the watchdog fired changes
// nothing: the request is cancelled already.
func (w *watchdog) kick() { w.timer.Reset(w.timeout) }

// stop ends the watch and releases the context.
func (w *watchdog) stop() {
	w.timer.Stop()
	w.cancel(context.Canceled)
}

// explain replaces the error of a request the watchdog cancelled by the
// stall, which names what stalled.
func (w *watchdog) explain(err error) error {
	var stall *stallError
	if errors.As(context.Cause(w.ctx), &stall) {
		return stall
	}
	return err
}

// watchedBody kicks its watchdog on every read that brought bytes and
// stops it at the end of the body or when it is closed.
type watchedBody struct {
	body io.ReadCloser
	w    *watchdog
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if n > 0 {
		b.w.kick()
	}
	switch {
	case err == io.EOF:
		b.w.timer.Stop()
	case err != nil:
		err = b.w.explain(err)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.body.Close()
	b.w.stop()
	return err
}

// describeRequest names what a registry request fetches, for the error of
// a stall: the manifest or blob from its path (distribution API), else the
// URL without its query (a token fetch).
func describeRequest(req *http.Request) string {
	p := req.URL.Path
	if rest, ok := strings.CutPrefix(p, "/v2/"); ok {
		if i := strings.LastIndex(rest, "/manifests/"); i >= 0 {
			repo, ref := rest[:i], rest[i+len("/manifests/"):]
			if strings.Contains(ref, ":") {
				return "manifest " + repo + "@" + ref
			}
			return "manifest " + repo + ":" + ref
		}
		if i := strings.LastIndex(rest, "/blobs/"); i >= 0 {
			return "blob " + rest[i+len("/blobs/"):]
		}
		if rest == "" {
			return "registry ping " + req.URL.Host
		}
	}
	return "request " + req.URL.Scheme + "://" + req.URL.Host + p
}
