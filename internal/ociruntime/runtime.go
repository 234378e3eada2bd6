// Package ociruntime runs OCI runtimes (runc, crun, and others with the same
// command line) for one RuntimeClass handler each. It execs the runtime per
// operation; nothing here keeps state besides the runtime's own --root.
package ociruntime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Runtime is one handler's OCI runtime binary and state root.
type Runtime struct {
	// Handler is the RuntimeClass handler name this runtime serves.
	Handler string
	// Path is the resolved binary.
	Path string
	// Root is the runtime's --root, where it keeps container state.
	Root string
	// SystemdCgroup passes --systemd-cgroup, for the systemd cgroup driver.
	SystemdCgroup bool
	// RecursiveReadOnly is set when the runtime can make mounts
	// recursively read-only ("rro").
	RecursiveReadOnly bool
}

// New resolves path (absolute, or looked up on PATH) and makes root.
func New(handler, path, root string, systemdCgroup bool) (*Runtime, error) {
	resolved, err := exec.LookPath(path)
	if err != nil {
		return nil, fmt.Errorf("runtime handler %s: binary %q: %w", handler, path, err)
	}
	if err := os.MkdirAll(root, 0o711); err != nil {
		return nil, fmt.Errorf("runtime handler %s: state root: %w", handler, err)
	}
	r := &Runtime{Handler: handler, Path: resolved, Root: root, SystemdCgroup: systemdCgroup}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.RecursiveReadOnly = r.SupportsMountOption(ctx, "rro")
	return r, nil
}

// Error is a failed runtime invocation with what it printed.
type Error struct {
	Op     string
	ID     string
	Err    error
	Output string
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s %s: %v", e.Op, e.ID, e.Err)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

func (r *Runtime) args(sub ...string) []string {
	a := make([]string, 0, len(sub)+4)
	a = append(a, "--root", r.Root)
	if r.SystemdCgroup {
		a = append(a, "--systemd-cgroup")
	}
	return append(a, sub...)
}

// Run creates and starts container id from bundle in one runtime call
// (`run --detach` saves the second exec of create + start) and returns the
// PID of its process. The container's stdio is /dev/null except stderr,
// which goes to logPath together with the runtime's own error output: the
// runtime hands its stdio to the container, so a pipe here would stay open
// as long as the container lives.
func (r *Runtime) Run(ctx context.Context, id, bundle, logPath string) (int, error) {
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("run %s: open log: %w", id, err)
	}
	defer logFile.Close()
	pidFile := filepath.Join(bundle, "pid")
	cmd := exec.CommandContext(ctx, r.Path, r.args("run", "--detach", "--no-new-keyring",
		"--bundle", bundle, "--pid-file", pidFile, id)...)
	cmd.Stderr = logFile
	// Not in huskd's process group, so a terminal's ^C never reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Run(); err != nil {
		return 0, &Error{Op: "run", ID: id, Err: err, Output: tail(logPath)}
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("run %s: read pid file: %w", id, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("run %s: bad pid file %q", id, b)
	}
	return pid, nil
}

// Delete removes container id's runtime state and cgroup, killing what is
// left of it. A container the runtime does not know is already deleted.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	out, err := r.exec(ctx, "delete", "--force", id)
	if err != nil {
		if notExist(out) {
			return nil
		}
		return &Error{Op: "delete", ID: id, Err: err, Output: out}
	}
	return nil
}

func (r *Runtime) exec(ctx context.Context, sub ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, r.Path, r.args(sub...)...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// notExist recognises runc's and crun's "no such container" messages.
func notExist(out string) bool {
	o := strings.ToLower(out)
	return strings.Contains(o, "does not exist") || strings.Contains(o, "not found") ||
		strings.Contains(o, "no such file or directory")
}

// tail returns the last lines of a runtime log, enough to say why it failed.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	b = bytes.TrimSpace(b)
	const max = 2048
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// Start starts a created container (it waits at the runtime's exec fifo).
func (r *Runtime) Start(ctx context.Context, id string) error {
	if out, err := r.exec(ctx, "start", id); err != nil {
		return &Error{Op: "start", ID: id, Err: err, Output: out}
	}
	return nil
}

// Kill sends sig to the container's init.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	if out, err := r.exec(ctx, "kill", id, strconv.Itoa(int(sig))); err != nil {
		return &Error{Op: "kill", ID: id, Err: err, Output: out}
	}
	return nil
}

// Update applies new resources (an OCI LinuxResources JSON file).
func (r *Runtime) Update(ctx context.Context, id, resourcesFile string) error {
	if out, err := r.exec(ctx, "update", "--resources", resourcesFile, id); err != nil {
		return &Error{Op: "update", ID: id, Err: err, Output: out}
	}
	return nil
}

// ExecCommand returns the command that runs the process described in
// processFile (an OCI process JSON: args, user, env, cwd, capabilities,
// terminal) in container id and waits for it. The full process is given
// because runtimes differ in what they take from the container when only
// args are (crun runs them as root). pidFile receives the PID of the
// process, for killing it on a timeout (killing the runtime would leave it
// running).
func (r *Runtime) ExecCommand(id, pidFile, processFile string) *exec.Cmd {
	cmd := exec.Command(r.Path, r.args("exec", "--process", processFile, "--pid-file", pidFile, id)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// SupportsMountOption reports whether the runtime's `features` command
// (OCI runtime features, runc 1.1+) lists a mount option, such as "rro";
// a runtime without that command supports none it would have to list.
func (r *Runtime) SupportsMountOption(ctx context.Context, option string) bool {
	out, err := exec.CommandContext(ctx, r.Path, "features").Output()
	if err != nil {
		return false
	}
	var f struct {
		MountOptions []string `json:"mountOptions"`
	}
	if json.Unmarshal(out, &f) != nil {
		return false
	}
	for _, o := range f.MountOptions {
		if o == option {
			return true
		}
	}
	return false
}
