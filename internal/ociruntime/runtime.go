// Package ociruntime runs OCI runtimes (runc, crun, and others with the same
// command line) for one RuntimeClass handler each. It execs the runtime per
// operation; nothing here keeps state besides the runtime's own --root.
package ociruntime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	// sealed, for runc, is the sealed copy of its binary that runs the
	// calls that start a process in a container (sealedBinary).
	sealed *sealedBinary
	// DirectInfra starts the pod's infra (husk-pause) without the runtime:
	// the pod's monitor forks it into its namespaces, and husk-pause
	// confines itself (internal/pausesetup). Off, the runtime runs it as
	// a container, as a runtime that makes the pod's sandbox itself (a VM)
	// needs. huskd sets it per handler.
	DirectInfra bool
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
	f := r.features(ctx)
	r.RecursiveReadOnly = slices.Contains(f.MountOptions, "rro")
	if _, ok := f.Annotations["org.opencontainers.runc.version"]; ok {
		r.sealed = &sealedBinary{path: resolved}
	}
	return r, nil
}

// ExecPath is the file to exec for the calls that start a process in a
// container (run, create, exec), with Path as its argv[0]: for runc the
// sealed copy of its binary (sealedBinary), else Path.
func (r *Runtime) ExecPath() string {
	if r.sealed == nil {
		return r.Path
	}
	return r.sealed.execPath()
}

// command is the runtime call that starts a process in a container.
func (r *Runtime) command(ctx context.Context, sub ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, r.Path, r.args(sub...)...)
	cmd.Path = r.ExecPath()
	return cmd
}

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
	cmd := r.command(ctx, "run", "--detach", "--no-new-keyring",
		"--bundle", bundle, "--pid-file", pidFile, id)
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
	if err := r.run(ctx, "delete", id, "delete", "--force", id); err != nil && !errors.Is(err, ErrNotExist) {
		return err
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

// run runs a runtime command about container id; a failure is an *Error
// of the kind its output says (classify).
func (r *Runtime) run(ctx context.Context, op, id string, sub ...string) error {
	out, err := r.exec(ctx, sub...)
	if err != nil {
		return &Error{Op: op, ID: id, Err: err, Output: out, Kind: r.classify(id, out)}
	}
	return nil
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
	return r.run(ctx, "start", id, "start", id)
}

// Kill sends sig to the container's init.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	return r.run(ctx, "kill", id, "kill", id, strconv.Itoa(int(sig)))
}

// State is what the runtime says of a container: its status ("created",
// "running", "stopped", "paused") and its init's PID.
type State struct {
	Status string `json:"status"`
	PID    int    `json:"pid"`
}

// State asks the runtime for the container's state; ErrNotExist when it
// has none.
func (r *Runtime) State(ctx context.Context, id string) (State, error) {
	var st State
	out, err := r.exec(ctx, "state", id)
	if err != nil {
		return st, &Error{Op: "state", ID: id, Err: err, Output: out, Kind: r.classify(id, out)}
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, &Error{Op: "state", ID: id, Err: fmt.Errorf("decode: %w", err), Output: out}
	}
	return st, nil
}

// Update applies new resources (an OCI LinuxResources JSON file).
func (r *Runtime) Update(ctx context.Context, id, resourcesFile string) error {
	return r.run(ctx, "update", id, "update", "--resources", resourcesFile, id)
}

// ExecCommand returns the command that runs the process described in
// processFile (an OCI process JSON: args, user, env, cwd, capabilities,
// terminal) in container id and waits for it. The full process is given
// because runtimes differ in what they take from the container when only
// args are (crun runs them as root). pidFile receives the PID of the
// process, for killing it on a timeout (killing the runtime would leave it
// running).
func (r *Runtime) ExecCommand(id, pidFile, processFile string) *exec.Cmd {
	cmd := r.command(context.Background(), "exec", "--process", processFile, "--pid-file", pidFile, id)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// SupportsMountOption reports whether the runtime's `features` command
// (OCI runtime features, runc 1.1+) lists a mount option, such as "rro";
// a runtime without that command supports none it would have to list.
func (r *Runtime) SupportsMountOption(ctx context.Context, option string) bool {
	return slices.Contains(r.features(ctx).MountOptions, option)
}

// runtimeFeatures is what husk reads of `runtime features`.
type runtimeFeatures struct {
	MountOptions []string          `json:"mountOptions"`
	Annotations  map[string]string `json:"annotations"`
}

// features is what the runtime's `features` says, empty for a runtime
// without that command.
func (r *Runtime) features(ctx context.Context) runtimeFeatures {
	var f runtimeFeatures
	out, err := exec.CommandContext(ctx, r.Path, "features").Output()
	if err == nil {
		_ = json.Unmarshal(out, &f)
	}
	return f
}

// Calls lists the processes that run this runtime on this root with the
// subcommand op: calls a huskd that died (kill -9) left running, which
// go on after it. Recovery waits for them before it reads the state they
// change.
func (r *Runtime) Calls(op string) []int {
	var out []int
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range cmdlines {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) != filepath.Base(r.Path) || !isCall(args[1:], r.Root, op) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// isCall tells whether args are `--root root [flags] op ...`.
func isCall(args []string, root, op string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--root" && args[i+1] == root {
			for _, a := range args[i+2:] {
				if !strings.HasPrefix(a, "-") {
					return a == op
				}
			}
		}
	}
	return false
}
