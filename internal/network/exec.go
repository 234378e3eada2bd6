package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
)

// pipeGrace is how long the wait for a plugin's output goes on after the
// plugin exited or was killed: a child it left behind (in another process
// group) may hold its stdout, and must not hold the call with it.
const pipeGrace = 2 * time.Second

// pluginExec runs CNI plugins for libcni, each in a process group of its
// own. When the call's context ends (the [cni] timeout, or the caller)
// the whole group is SIGKILLed: a plugin that hangs is ended with the
// helpers it started, where libcni's exec would kill the plugin alone and
// then wait, forever, for the output pipe a surviving child holds.
type pluginExec struct {
	version.PluginDecoder
	// stderr receives what plugins that succeeded wrote to their stderr.
	stderr io.Writer
}

var _ invoke.Exec = (*pluginExec)(nil)

func (e *pluginExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

// ExecPlugin runs the plugin with stdin and environ and returns its
// stdout. A plugin binary being replaced (ETXTBSY) is tried again, as
// libcni does.
func (e *pluginExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		out, err := e.run(ctx, path, stdin, environ)
		if !errors.Is(err, syscall.ETXTBSY) || attempt == 5 {
			return out, err
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return nil, err
		}
	}
}

func (e *pluginExec) run(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = pipeGrace
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start plugin %s: %w", path, err)
	}
	err := cmd.Wait()
	if ctx.Err() != nil {
		// Killed by Cancel, or ended just as the context did: either way
		// nothing of its group may stay, and its output is not trusted.
		_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		return nil, fmt.Errorf("plugin %s killed with its process group: %w", filepath.Base(path), context.Cause(ctx))
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		if cmd.ProcessState.Success() {
			err = fmt.Errorf("plugin %s exited but a process it started still held its output", filepath.Base(path))
		}
	}
	if err != nil {
		return nil, pluginError(err, stdout.Bytes(), stderr.Bytes())
	}
	if e.stderr != nil && stderr.Len() > 0 {
		_, _ = stderr.WriteTo(e.stderr)
	}
	return stdout.Bytes(), nil
}

// pluginError is the CNI error a failed plugin printed on stdout, else
// its stderr and exit status, as libcni's own exec reports them.
func pluginError(err error, stdout, stderr []byte) error {
	msg := types.Error{}
	switch {
	case len(stdout) > 0:
		if jerr := json.Unmarshal(stdout, &msg); jerr != nil || (msg.Msg == "" && msg.Code == 0) {
			msg = types.Error{Msg: fmt.Sprintf("netplugin failed with output %q: %v", stdout, err)}
		}
	case len(stderr) > 0:
		msg.Msg = fmt.Sprintf("netplugin failed: %q: %v", stderr, err)
	default:
		msg.Msg = fmt.Sprintf("netplugin failed with no error message: %v", err)
	}
	return &msg
}
