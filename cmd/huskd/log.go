package main

import (
	"io"
	"log/slog"
)

// secretKeys are attribute names whose values never reach a log line,
// whoever logs them: the credentials of a pull (CRI AuthConfig) and of a
// registry's config.
var secretKeys = map[string]bool{
	"password": true, "auth": true, "identity_token": true, "registry_token": true,
}

// newLogger is huskd's logger: slog's text handler (key=value) or its JSON
// handler (one object per line, for log pipelines), at level.
func newLogger(format, level string, w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated with the config
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: redact}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func redact(_ []string, a slog.Attr) slog.Attr {
	if secretKeys[a.Key] {
		return slog.String(a.Key, "<redacted>")
	}
	return a
}
