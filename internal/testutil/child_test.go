package testutil

import (
	"os"
	"testing"
)

// The TestChild tests run only as TestGates' child process.
func child(t *testing.T) {
	if os.Getenv("HUSK_TESTUTIL_CHILD") == "" {
		t.Skip("run by TestGates")
	}
}

func TestChildRoot(t *testing.T)    { child(t); RequiresRoot(t, "child") }
func TestChildKernel(t *testing.T)  { child(t); RequiresKernel(t, "child") }
func TestChildCommand(t *testing.T) { child(t); RequiresCommand(t, "husk-no-such-command") }
func TestChildFile(t *testing.T)    { child(t); RequiresFile(t, "/no/such/file", "some-package") }
