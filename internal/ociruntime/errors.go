package ociruntime

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
)

// The kinds of runtime failure callers act on. An *Error of a known kind
// unwraps to it, so callers ask errors.Is(err, ErrNotExist) instead of
// reading the runtime's words, which classify alone does.
var (
	// ErrNotExist: the runtime has no state for the container: never
	// created, deleted, or its state root is gone (a reboot).
	ErrNotExist = fmt.Errorf("no such container in the runtime: %w", errdefs.ErrNotFound)
	// ErrNotRunning: the container exists but its process does not run
	// (it stopped), so kill, start and exec refuse.
	ErrNotRunning = fmt.Errorf("container process not running: %w", errdefs.ErrFailedPrecondition)
	// ErrAlreadyStarted: start of a container that was started already.
	ErrAlreadyStarted = fmt.Errorf("container already started: %w", errdefs.ErrFailedPrecondition)
)

// Error is a failed runtime invocation with what it printed.
type Error struct {
	Op     string
	ID     string
	Err    error
	Output string
	// Kind is ErrNotExist, ErrNotRunning, ErrAlreadyStarted or nil (any
	// other failure).
	Kind error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s %s: %v", e.Op, e.ID, e.Err)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

func (e *Error) Unwrap() []error {
	if e.Kind == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Kind}
}

// classify reads what kind of failure the runtime's output about
// container id reports. runc and crun exit 1 (runc exec 255) whatever
// went wrong, so the wording is all there is; it is read here only. As
// containerd's runc shim and CRI-O, runc's libcontainer errors are
// matched by their fixed text. crun's are ENOENTs on files of the
// container's own dir under the runtime root, matched with their paths,
// so that an ENOENT of anything else (a missing binary in exec) is not
// taken for a missing container.
func (r *Runtime) classify(id, out string) error {
	o := strings.ToLower(out)
	state := strings.ToLower(filepath.Join(r.Root, id))
	enoent := strings.Contains(o, "no such file or directory")
	switch {
	// runc: start of a running container; crun: its exec fifo, gone
	// once the container started.
	case strings.Contains(o, "cannot start an already running container"),
		enoent && strings.Contains(o, "`"+state+"/exec.fifo`"):
		return ErrAlreadyStarted
	// runc: libcontainer's ErrNotExist ("container does not exist";
	// `container "<id>" does not exist` before 1.0).
	case strings.Contains(o, "container does not exist"),
		strings.Contains(o, "container \""+strings.ToLower(id)+"\" does not exist"),
		// crun: "error opening file `<root>/<id>/status`: No such file
		// or directory", "cannot open directory '<root>/<id>': ...".
		enoent && (strings.Contains(o, "`"+state+"/status`") || strings.Contains(o, "'"+state+"'")):
		return ErrNotExist
	// runc: ErrNotRunning ("container not running"), and start and exec
	// of a stopped container.
	case strings.Contains(o, "container not running"),
		strings.Contains(o, "cannot start a container that has stopped"),
		strings.Contains(o, "cannot exec in a stopped container"),
		// crun: kill of a stopped container ("kill container: No such
		// process"), start and exec ("container `<id>` is not running").
		strings.Contains(o, "kill container: no such process"),
		strings.Contains(o, "`"+strings.ToLower(id)+"` is not running"):
		return ErrNotRunning
	}
	return nil
}
