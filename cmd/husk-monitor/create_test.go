package main

import (
	"os"
	"path/filepath"
	"testing"

	monclient "github.com/huskrt/husk/internal/monitor"
	"github.com/huskrt/husk/internal/monitor/proto"
)

func TestRuntimeError(t *testing.T) {
	tests := []struct{ log, want string }{
		{"", "no error output"},
		{`{"level":"info","msg":"starting"}` + "\n" + `{"level":"error","msg":"exec: \"nope\": executable file not found"}`, `exec: "nope": executable file not found`},
		{"crun: open executable: No such file or directory", "crun: open executable: No such file or directory"},
		{"a\nb\nc\nd\ne", "c; d; e"},
	}
	for _, tt := range tests {
		p := filepath.Join(t.TempDir(), "runtime.log")
		if err := os.WriteFile(p, []byte(tt.log), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := runtimeError(p); got != tt.want {
			t.Errorf("runtimeError(%q) = %q, want %q", tt.log, got, tt.want)
		}
	}
}

func TestWriteExitIsReadBack(t *testing.T) {
	p := filepath.Join(t.TempDir(), "exit.json")
	want := proto.Exit{Code: 137, Signaled: true, At: 1234}
	if err := writeExit(p, &want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := monclient.ReadExit(p)
	if err != nil || !ok || got != want {
		t.Errorf("ReadExit = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	ents, err := os.ReadDir(filepath.Dir(p))
	if err != nil || len(ents) != 1 {
		t.Errorf("files beside the exit file: %v, %v; want only it", ents, err)
	}
	if _, ok, _ := monclient.ReadExit(filepath.Join(t.TempDir(), "none")); ok {
		t.Error("ReadExit of a missing file says ok")
	}
}
