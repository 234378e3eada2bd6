package ociruntime

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/huskrt/husk/internal/testutil"
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
		{"runc", `echo 'time="x" level=error msg="container does not exist"' >&2; exit 1`, false},
		{"crun", `echo "cannot open directory '$2/c1': No such file or directory" >&2; exit 1`, false},
		{"another file missing", `echo "error opening file '/etc/nosuch': No such file or directory" >&2; exit 1`, true},
		{"other failure", `echo "device or resource busy" >&2; exit 1`, true},
		{"ok", `exit 0`, false},
	}
	for _, tt := range tests {
		r := fakeRuntime(t, tt.body)
		err := r.Delete(context.Background(), "c1")
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: Delete = %v, wantErr %v", tt.name, err, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "delete c1") {
			t.Errorf("%s: error lacks the operation: %v", tt.name, err)
		}
	}
}

// classify reads runc's and crun's words, as they print them (captured
// from runc 1.1.5 and crun 1.8.1), and nothing else.
func TestClassify(t *testing.T) {
	r := &Runtime{Root: "/run/husk/runtime/x"}
	tests := []struct {
		name, out string
		want      error
	}{
		{"runc kill, no container", `time="2026-12-02T04:47:19Z" level=error msg="container does not exist"`, ErrNotExist},
		{"runc exec, no container", `time="2026-12-02T04:47:19Z" level=error msg="exec failed: container does not exist"`, ErrNotExist},
		{"runc before 1.0", `container "c1" does not exist`, ErrNotExist},
		{"crun kill, no container", "error opening file `/run/husk/runtime/x/c1/status`: No such file or directory", ErrNotExist},
		{"crun delete, no container", "cannot open directory '/run/husk/runtime/x/c1': No such file or directory", ErrNotExist},
		{"runc kill, stopped", `time="2026-12-02T04:47:22Z" level=error msg="container not running"`, ErrNotRunning},
		{"runc start, stopped", `level=error msg="cannot start a container that has stopped"`, ErrNotRunning},
		{"runc exec, stopped", `level=error msg="exec failed: cannot exec in a stopped container"`, ErrNotRunning},
		{"crun kill, stopped", "kill container: No such process", ErrNotRunning},
		{"crun start, stopped", "container `c1` is not running", ErrNotRunning},
		{"crun exec, stopped", "the container `c1` is not running", ErrNotRunning},
		{"runc start, running", `level=error msg="cannot start an already running container"`, ErrAlreadyStarted},
		{"crun start, running", "cannot open `/run/husk/runtime/x/c1/exec.fifo`: No such file or directory", ErrAlreadyStarted},
		{"another file of the container", "error opening file `/run/husk/runtime/x/c1/other`: No such file or directory", nil},
		{"another container's state", "error opening file `/run/husk/runtime/x/c2/status`: No such file or directory", nil},
		{"a missing file in the container", "executable file not found: open /bin/nosuch: no such file or directory", nil},
		{"a mount not found", `level=error msg="mount point not found"`, nil},
		{"busy", "device or resource busy", nil},
	}
	for _, tt := range tests {
		if got := r.classify("c1", tt.out); got != tt.want {
			t.Errorf("%s: classify(%q) = %v, want %v", tt.name, tt.out, got, tt.want)
		}
	}
	err := error(&Error{Op: "kill", ID: "c1", Err: errors.New("exit status 1"), Kind: ErrNotExist})
	if !errors.Is(err, ErrNotExist) || !errdefs.IsNotFound(err) {
		t.Errorf("an *Error of kind ErrNotExist: errors.Is %v, IsNotFound %v", errors.Is(err, ErrNotExist), errdefs.IsNotFound(err))
	}
}

// The real runtimes, on a container that does not exist, one that runs
// and one that has stopped.
func TestRuntimeErrorKinds(t *testing.T) {
	testutil.RequiresRoot(t, "runc and crun run containers")
	bundle, sleeper := busyboxBundle(t, "true"), busyboxBundle(t, "sleep", "60")
	for _, name := range []string{"runc", "crun"} {
		t.Run(name, func(t *testing.T) {
			testutil.RequiresCommand(t, name)
			root := filepath.Join(t.TempDir(), "root")
			r, err := New(name, name, root, false)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := r.Kill(ctx, "nosuch", syscall.SIGKILL); !errors.Is(err, ErrNotExist) {
				t.Errorf("Kill(nosuch) = %v, want ErrNotExist", err)
			}
			if err := r.Start(ctx, "nosuch"); !errors.Is(err, ErrNotExist) {
				t.Errorf("Start(nosuch) = %v, want ErrNotExist", err)
			}
			if _, err := r.State(ctx, "nosuch"); !errors.Is(err, ErrNotExist) {
				t.Errorf("State(nosuch) = %v, want ErrNotExist", err)
			}
			if err := r.Delete(ctx, "nosuch"); err != nil {
				t.Errorf("Delete(nosuch) = %v", err)
			}
			running := "running-" + name
			if _, err := r.Run(ctx, running, sleeper, filepath.Join(t.TempDir(), "log")); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Delete(context.Background(), running) })
			if err := r.Start(ctx, running); !errors.Is(err, ErrAlreadyStarted) {
				t.Errorf("Start(running) = %v, want ErrAlreadyStarted", err)
			}
			id := "stopped-" + name
			if _, err := r.Run(ctx, id, bundle, filepath.Join(t.TempDir(), "log")); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Delete(context.Background(), id) })
			deadline := time.Now().Add(10 * time.Second)
			for {
				st, err := r.State(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if st.Status == "stopped" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("container still %s", st.Status)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := r.Kill(ctx, id, syscall.SIGKILL); !errors.Is(err, ErrNotRunning) {
				t.Errorf("Kill(stopped) = %v, want ErrNotRunning", err)
			}
			if err := r.Start(ctx, id); !errors.Is(err, ErrNotRunning) {
				t.Errorf("Start(stopped) = %v, want ErrNotRunning", err)
			}
		})
	}
}

// busyboxBundle is a bundle that runs a busybox applet.
func busyboxBundle(t *testing.T, args ...string) string {
	t.Helper()
	testutil.RequiresFile(t, "/bin/busybox", "busybox-static")
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "rootfs", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs", "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	argv, _ := json.Marshal(append([]string{"/bin/busybox"}, args...))
	spec := `{"ociVersion": "1.0.2", "process": {"args": ` + string(argv) + `, "cwd": "/", "user": {"uid": 0, "gid": 0}},
 "root": {"path": "rootfs"}, "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
 "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestNewResolvesBinary(t *testing.T) {
	if _, err := New("nosuch", "husk-no-such-runtime", t.TempDir(), false); err == nil {
		t.Error("a missing binary was accepted")
	}
}

func TestIsCall(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{[]string{"--root", "/r", "start", "c1"}, true},
		{[]string{"--root", "/r", "--systemd-cgroup", "start", "c1"}, true},
		{[]string{"--root", "/r", "kill", "c1", "9"}, false},
		{[]string{"--root", "/other", "start", "c1"}, false},
		{[]string{"init"}, false},
		{[]string{"--root", "/r"}, false},
	} {
		if got := isCall(tt.args, "/r", "start"); got != tt.want {
			t.Errorf("isCall(%q) = %v, want %v", tt.args, got, tt.want)
		}
	}
}
