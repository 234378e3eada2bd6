// Package testutil gates tests on what they need from the machine, so that
// no test skips quietly:
//
//   - go test -short runs only the tests that need neither root nor the
//     kernel's namespaces, mounts or cgroups; the others skip, saying
//     what they need (-short is the explicit opt-out);
//   - without -short a missing prerequisite (not root, no runc, no
//     busybox, no CNI plugin) skips the test with the reason, except under
//     CI=true, where it fails it: a CI run that tested nothing must not
//     pass.
package testutil

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// CI reports whether the CI environment variable is true.
func CI() bool {
	v, _ := strconv.ParseBool(os.Getenv("CI"))
	return v
}

// RequiresKernel marks a test that needs the kernel's namespaces, mounts
// or cgroups (what says which), but not root.
func RequiresKernel(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("skipped under -short: needs the kernel (%s)", what)
	}
}

// RequiresRoot marks a test that needs root and the kernel (what says
// which part).
func RequiresRoot(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("skipped under -short: needs root and the kernel (%s)", what)
	}
	if os.Geteuid() != 0 {
		Missing(t, "needs root (%s); euid is %d", what, os.Geteuid())
	}
}

// RequiresCommand returns the path of command name, or skips the test
// (fails it under CI=true) when it is not on PATH.
func RequiresCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "needs %s on PATH (scripts/deps.sh installs it): %v", name, err)
	}
	return p
}

// RequiresFile skips the test (fails it under CI=true) when path does not
// exist; pkg names what provides it.
func RequiresFile(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, "needs %s (%s; scripts/deps.sh installs it): %v", path, pkg, err)
	}
}

// Missing ends a test whose prerequisite the machine lacks: a skip that
// says why, or under CI=true a failure.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if CI() {
		t.Fatalf("CI=true, so a missing prerequisite fails: "+format, args...)
	}
	t.Skipf("skipped, set CI=true to make this fail: "+format, args...)
}
