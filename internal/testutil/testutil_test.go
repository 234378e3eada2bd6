package testutil

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The gates are checked from outside, in a child run of this test binary,
// since a skip or a failure ends the test that calls them.
func TestGates(t *testing.T) {
	tests := []struct {
		name, env, args string
		want            []string
	}{
		{"short skips root tests", "CI=true", "-test.short", []string{"--- SKIP: TestChildRoot", "skipped under -short: needs root and the kernel (child)"}},
		{"short skips kernel tests", "", "-test.short", []string{"--- SKIP: TestChildKernel", "skipped under -short: needs the kernel (child)"}},
		{"missing command skips", "CI=false", "", []string{"--- SKIP: TestChildCommand", "needs husk-no-such-command on PATH"}},
		{"missing command fails under CI", "CI=true", "", []string{"--- FAIL: TestChildCommand", "CI=true, so a missing prerequisite fails"}},
		{"missing file fails under CI", "CI=1", "", []string{"--- FAIL: TestChildFile", "needs /no/such/file (some-package"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"-test.count=1", "-test.v", "-test.run=^TestChild"}
			if tt.args != "" {
				args = append(args, tt.args)
			}
			cmd := exec.Command(os.Args[0], args...)
			cmd.Env = append(cmd.Environ(), "HUSK_TESTUTIL_CHILD=1", tt.env)
			out, _ := cmd.CombinedOutput()
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
