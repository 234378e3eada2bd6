package container

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// execResult turns how the runtime ended into Exec's answer: what a
// shell would report as the exit status, or an error naming the container.
func TestExecResult(t *testing.T) {
	tests := []struct {
		script string
		code   int // -1: no exit status (nil)
	}{
		{"exit 0", -1},
		{"exit 3", 3},
		{"kill -KILL $$", 137},
		{"kill -TERM $$", 143},
	}
	for _, tt := range tests {
		err := execResult("c1", exec.Command("/bin/sh", "-c", tt.script).Run())
		var exit *ExitError
		switch {
		case tt.code < 0 && err != nil:
			t.Errorf("%q: %v, want nil", tt.script, err)
		case tt.code >= 0 && (!errors.As(err, &exit) || exit.Code != tt.code):
			t.Errorf("%q: %v, want exit code %d", tt.script, err, tt.code)
		}
	}
	err := execResult("c1", exec.Command("/no/such/runtime").Run())
	if err == nil || !strings.Contains(err.Error(), "container c1: exec:") {
		t.Errorf("a runtime that did not run: %v, want an error naming container c1", err)
	}
}
