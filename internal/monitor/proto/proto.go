// Package proto is the wire format between huskd and husk-monitor: one
// JSON Request and one JSON Response per unix socket connection. It is
// its own package so the monitor binary imports nothing else of huskd's.
package proto

// SocketName is the monitor's socket in its directory.
const SocketName = "monitor.sock"

// Operations.
const (
	OpPing   = "ping"
	OpCreate = "create" // create a container through the runtime; answers its PID
	// OpRun creates and starts a container in one runtime call (its run
	// --detach): the Create request, answered with the PID of the
	// container's process, running. A monitor older than OpRun answers
	// CodeInvalidArgument (unknown op).
	OpRun      = "run"
	OpWait     = "wait"     // answers once the container exited and its exit is recorded
	OpReopen   = "reopen"   // reopen the container's log file
	OpForget   = "forget"   // drop an exited container
	OpShutdown = "shutdown" // exit, when no container runs
	// OpAttach turns the connection, after the answer, into the
	// container's stdio: frames both ways (see Frame*).
	OpAttach = "attach"
	// OpInfra starts the pod's infra process, whose parent the monitor
	// stays; answers its PID. A wait for the sandbox's ID answers once it
	// exited, and shutdown refuses while it runs.
	OpInfra = "infra"
)

// Attach frames: a type byte, a big-endian uint32 length, the payload.
// The monitor sends FrameStdout and FrameStderr and closes the connection
// when the container's output ends; the client sends FrameStdin,
// FrameStdinClose and FrameResize (payload: width, height as uint16).
// FrameStdinClose, the end of the client's stdin, closes the container's
// stdin when it is stdin_once without a terminal (the session then lasts
// until the output ends); otherwise the monitor ends that session and
// closes the connection, as containerd ends an attach.
const (
	FrameStdin      byte = 0
	FrameStdout     byte = 1
	FrameStderr     byte = 2
	FrameStdinClose byte = 3
	FrameResize     byte = 4
)

// Request is what huskd asks.
type Request struct {
	Op     string  `json:"op"`
	ID     string  `json:"id,omitempty"`
	Create *Create `json:"create,omitempty"`
	Infra  *Infra  `json:"infra,omitempty"`
}

// Infra describes how to start a pod's infra. Either directly (Path set):
// the monitor forks Path with Args in new namespaces (Cloneflags, and the
// user namespace of UIDMappings and GIDMappings, whose root it runs as),
// writes its PID into each of CgroupProcs and OOMScoreAdj into its
// oom_score_adj while it waits, then sends it Setup on its fd 3 and
// answers the report it reads back (see internal/pausesetup). Or through
// the OCI runtime (Runtime set): `runtime run --detach` of Bundle, as
// Create runs `runtime create`. Either way the infra's stdin and stdout are
// /dev/null and its stderr, with the runtime's, goes to LogPath.
type Infra struct {
	ID      string `json:"id"`
	LogPath string `json:"logPath"`

	Path        string      `json:"path,omitempty"`
	Args        []string    `json:"args,omitempty"`
	Cloneflags  uintptr     `json:"cloneflags,omitempty"`
	UIDMappings []IDMapping `json:"uidMappings,omitempty"`
	GIDMappings []IDMapping `json:"gidMappings,omitempty"`
	CgroupProcs []string    `json:"cgroupProcs,omitempty"`
	OOMScoreAdj int         `json:"oomScoreAdj"`
	Setup       []byte      `json:"setup,omitempty"`

	Runtime       string `json:"runtime,omitempty"`
	RuntimeRoot   string `json:"runtimeRoot,omitempty"`
	SystemdCgroup bool   `json:"systemdCgroup,omitempty"`
	Bundle        string `json:"bundle,omitempty"`
}

// IDMapping maps Size IDs from ContainerID in a user namespace to HostID.
type IDMapping struct {
	ContainerID uint32 `json:"containerID"`
	HostID      uint32 `json:"hostID"`
	Size        uint32 `json:"size"`
}

// Create describes a container for the runtime's create (OpCreate) or run
// (OpRun) command.
type Create struct {
	ID string `json:"id"`
	// Runtime is the OCI runtime binary, RuntimeRoot its --root.
	Runtime string `json:"runtime"`
	// RuntimeExec, when set, is the file to exec for Runtime (its argv[0]):
	// huskd's sealed copy of runc's binary, /proc/<huskd>/fd/<n>.
	RuntimeExec   string `json:"runtimeExec,omitempty"`
	RuntimeRoot   string `json:"runtimeRoot"`
	SystemdCgroup bool   `json:"systemdCgroup,omitempty"`
	Bundle        string `json:"bundle"`
	// LogPath is the CRI log file; ExitFile where the exit is recorded.
	LogPath  string `json:"logPath"`
	ExitFile string `json:"exitFile"`
	Stdin    bool   `json:"stdin,omitempty"`
	// StdinOnce closes the container's stdin when the first attached
	// client that sent stdin goes away.
	StdinOnce bool `json:"stdinOnce,omitempty"`
	Tty       bool `json:"tty,omitempty"`
}

// Exit is a container's recorded end, also the content of its exit file.
type Exit struct {
	// Code is the exit status, or 128 + the signal that killed it.
	Code     int32 `json:"code"`
	Signaled bool  `json:"signaled,omitempty"`
	// At is the time of the exit, Unix nanoseconds.
	At int64 `json:"at"`
}

// Response answers a Request; Error is set when it failed, with the Code
// that classifies the failure.
type Response struct {
	Error string `json:"error,omitempty"`
	Code  Code   `json:"code,omitempty"`
	PID   int    `json:"pid,omitempty"`
	Exit  *Exit  `json:"exit,omitempty"`
	// Report is what a directly started infra answered its setup with.
	Report []byte `json:"report,omitempty"`
}

// Code classifies a failed request, so that huskd acts on what failed,
// never on the words of the message. The empty code is any other failure
// (the runtime's create failed, an I/O error).
type Code string

const (
	// CodeNotFound: the monitor does not know the container (it never
	// created it, forgot it, or is not the monitor that created it).
	CodeNotFound Code = "not_found"
	// CodeAlreadyExists: a create of an ID the monitor already created.
	CodeAlreadyExists Code = "already_exists"
	// CodeFailedPrecondition: the container is in the wrong state (forget
	// or shutdown while it runs, attach once it exited).
	CodeFailedPrecondition Code = "failed_precondition"
	// CodeInvalidArgument: an incomplete request or an unknown operation.
	CodeInvalidArgument Code = "invalid_argument"
)
