package ociruntime

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// copyFile writes src's content to dst, executable.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// exitCode runs exe with argv[0] name and returns its exit code.
func exitCode(t *testing.T, exe, name string) int {
	t.Helper()
	cmd := exec.Command(name)
	cmd.Path = exe
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("exec %s: %v", exe, err)
	}
	return 0
}

func TestSealedBinary(t *testing.T) {
	trueBin, err1 := exec.LookPath("true")
	falseBin, err2 := exec.LookPath("false")
	if err1 != nil || err2 != nil {
		t.Fatalf("true and false are needed: %v %v", err1, err2)
	}
	bin := filepath.Join(t.TempDir(), "runtime")
	copyFile(t, trueBin, bin)
	s := &sealedBinary{path: bin}

	first := s.execPath()
	if !strings.HasPrefix(first, "/proc/") {
		t.Fatalf("execPath = %s, want the memfd", first)
	}
	f, err := os.Open(first)
	if err != nil {
		t.Fatal(err)
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	f.Close()
	if err != nil || seals != runcSeals {
		t.Fatalf("seals = %#x, %v; want exactly %#x, what runc checks for", seals, err, runcSeals)
	}
	if again := s.execPath(); again != first {
		t.Fatalf("execPath of an unchanged binary = %s, want %s", again, first)
	}
	if code := exitCode(t, first, bin); code != 0 {
		t.Fatalf("the copy of true exited %d", code)
	}

	// An upgrade: the binary on disk changes, the next exec gets a new
	// copy, and the old copy stays for a caller about to exec it.
	copyFile(t, falseBin, bin+".new")
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	second := s.execPath()
	if second == first {
		t.Fatalf("execPath after an upgrade is still %s", first)
	}
	if code := exitCode(t, second, bin); code != 1 {
		t.Fatalf("the copy of the new binary (false) exited %d", code)
	}
	if code := exitCode(t, first, bin); code != 0 {
		t.Fatalf("the old copy exited %d after the upgrade", code)
	}
}

func TestSealedBinaryRefusesScripts(t *testing.T) {
	script := filepath.Join(t.TempDir(), "runc")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := &sealedBinary{path: script}
	if got := s.execPath(); got != script {
		t.Fatalf("execPath of a script = %s, want the script itself", got)
	}
	if code := exitCode(t, s.execPath(), script); code != 0 {
		t.Fatalf("script exited %d", code)
	}
}

// TestNewSealsRuncOnly: the runtime whose features name runc gets the
// sealed copy; others exec their binary.
func TestNewSealsRuncOnly(t *testing.T) {
	for _, tc := range []struct {
		name, features string
		sealed         bool
	}{
		{"runc", `{"annotations":{"org.opencontainers.runc.version":"1.1.5"}}`, true},
		{"crun", `{"annotations":{"run.oci.crun.version":"1.9"}}`, false},
		{"no features", ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := fakeRuntime(t, `[ "$1" = features ] && echo '`+tc.features+`'`)
			if (r.sealed != nil) != tc.sealed {
				t.Fatalf("sealed = %v, want %v", r.sealed != nil, tc.sealed)
			}
			// A script is never sealed (TestSealedBinaryRefusesScripts).
			if got := r.ExecPath(); got != r.Path {
				t.Fatalf("ExecPath = %s, want %s", got, r.Path)
			}
		})
	}
}
