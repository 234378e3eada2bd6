package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/huskrt/husk/internal/testutil"
)

// pinNew creates a network namespace pinned in the test's temp dir.
func pinNew(t *testing.T) string {
	t.Helper()
	pin := filepath.Join(t.TempDir(), "ns")
	if err := os.WriteFile(pin, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	err := RunNew(func() error {
		if err := offMainThread("RunNew"); err != nil {
			return err
		}
		return unix.Mount(Self(), pin, "", unix.MS_BIND, "")
	})
	if err != nil {
		t.Fatalf("pin a new namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(pin, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", pin, err)
		}
	})
	return pin
}

// offMainThread fails when called on the main thread: a goroutine that
// ends locked there parks it for good.
func offMainThread(what string) error {
	if unix.Gettid() == unix.Getpid() {
		return fmt.Errorf("%s: on the main thread", what)
	}
	return nil
}

// nsOf names the namespace at path (a pin or a /proc link) as
// /proc/<pid>/ns/net does.
func nsOf(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// Many goroutines entering namespaces at once: each function runs in the
// namespace asked for and never on the main thread, and afterwards every
// thread of the process, the main thread first, is where it was (issue
// 16: a locked goroutine that ends on the main thread parks it for good
// in the pod's namespace).
func TestWorkStaysOffTheMainThread(t *testing.T) {
	testutil.RequiresRoot(t, "network namespaces")
	host := nsOf("/proc/self/ns/net")
	pin := pinNew(t)
	want := nsOf(pin)
	const rounds, parallel = 50, 20
	for range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, 2*parallel)
		for range parallel {
			wg.Go(func() {
				errs <- Run(pin, func() error {
					if ns := nsOf(Self()); ns != want {
						return fmt.Errorf("Run: in %s, want %s", ns, want)
					}
					return offMainThread("Run")
				})
			})
			wg.Go(func() {
				errs <- RunNew(func() error {
					if ns := nsOf(Self()); ns == host || ns == want {
						return fmt.Errorf("RunNew: in %s, not a new namespace", ns)
					}
					return offMainThread("RunNew")
				})
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		main := fmt.Sprintf("/proc/self/task/%d/ns/net", os.Getpid())
		if ns := nsOf(main); ns != host {
			t.Fatalf("the main thread is in %s, want the host's %s", ns, host)
		}
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
	for _, task := range tasks {
		if ns, err := os.Readlink(task); err == nil && ns != host {
			t.Errorf("%s = %s, want %s", task, ns, host)
		}
	}
}

func TestRunErrors(t *testing.T) {
	testutil.RequiresRoot(t, "network namespaces")
	ran := false
	for _, tt := range []struct{ path, want string }{
		{filepath.Join(t.TempDir(), "missing"), "no such file"},
		{"/proc/self/ns/uts", "enter netns /proc/self/ns/uts: invalid argument"},
		{"/proc/self/status", "enter netns /proc/self/status: invalid argument"},
	} {
		err := Run(tt.path, func() error { ran = true; return nil })
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Run(%s) = %v, want an error with %q", tt.path, err, tt.want)
		}
	}
	if ran {
		t.Error("fn ran although entering the namespace failed")
	}
	pin := pinNew(t)
	sentinel := errors.New("from fn")
	if err := Run(pin, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Run returned %v, want fn's error", err)
	}
}
