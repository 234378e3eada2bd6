package ociruntime

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRuntime writes a runtime-compatible script that answers like runc.
func fakeRuntime(t *testing.T, body string) *Runtime {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "fake-runc")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := New("fake", bin, filepath.Join(dir, "root"), false)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRunReadsPIDFile(t *testing.T) {
	// Args: --root R run --detach --no-new-keyring --bundle B --pid-file P ID
	r := fakeRuntime(t, `while [ $# -gt 0 ]; do [ "$1" = --pid-file ] && echo 4242 > "$2"; shift; done`)
	bundle := t.TempDir()
	pid, err := r.Run(context.Background(), "c1", bundle, filepath.Join(bundle, "log"))
	if err != nil || pid != 4242 {
		t.Fatalf("Run = %d, %v", pid, err)
	}
}

func TestRunErrorCarriesOutput(t *testing.T) {
	r := fakeRuntime(t, `echo "container_linux.go: starting container process caused: boom" >&2; exit 1`)
	bundle := t.TempDir()
	_, err := r.Run(context.Background(), "c1", bundle, filepath.Join(bundle, "log"))
	if err == nil || !strings.Contains(err.Error(), "caused: boom") || !strings.Contains(err.Error(), "run c1") {
		t.Fatalf("Run error = %v", err)
	}
}

func TestDeleteOfUnknownContainerSucceeds(t *testing.T) {
	tests := []struct {
		name, body string
		wantErr    bool
	}{
		{"runc", `echo "container does not exist" >&2; exit 1`, false},
		{"crun", `echo "error opening file: No such file or directory" >&2; exit 1`, false},
		{"other failure", `echo "device or resource busy" >&2; exit 1`, true},
		{"ok", `exit 0`, false},
	}
	for _, tt := range tests {
		r := fakeRuntime(t, tt.body)
		err := r.Delete(context.Background(), "c1")
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: Delete = %v, wantErr %v", tt.name, err, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "busy") {
			t.Errorf("%s: error lacks the runtime's output: %v", tt.name, err)
		}
	}
}

func TestNewResolvesBinary(t *testing.T) {
	if _, err := New("nosuch", "husk-no-such-runtime", t.TempDir(), false); err == nil {
		t.Error("a missing binary was accepted")
	}
}
