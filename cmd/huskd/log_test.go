package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	tests := []struct {
		format, level string
		check         func(t *testing.T, out string)
	}{
		{"json", "info", func(t *testing.T, out string) {
			var m map[string]any
			if err := json.Unmarshal([]byte(out), &m); err != nil {
				t.Fatalf("not JSON: %v: %q", err, out)
			}
			if m["msg"] != "hello" || m["pod_sandbox_id"] != "abc" || m["level"] != "INFO" {
				t.Errorf("line = %v", m)
			}
		}},
		{"text", "info", func(t *testing.T, out string) {
			if !strings.Contains(out, "msg=hello pod_sandbox_id=abc") {
				t.Errorf("line = %q", out)
			}
		}},
		{"json", "warn", func(t *testing.T, out string) {
			if out != "" {
				t.Errorf("info line at level warn: %q", out)
			}
		}},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		log := newLogger(tt.format, tt.level, &buf)
		log.Info("hello", "pod_sandbox_id", "abc", "password", "pw-secret", "auth", "YXV0aA==")
		if strings.Contains(buf.String(), "pw-secret") || strings.Contains(buf.String(), "YXV0aA==") {
			t.Errorf("%s: a secret reached the log: %q", tt.format, buf.String())
		}
		t.Run(tt.format+"/"+tt.level, func(t *testing.T) { tt.check(t, strings.TrimSpace(buf.String())) })
	}
}
