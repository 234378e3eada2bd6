package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/huskrt/husk/internal/ociruntime"
)

// runcFloor is the floor of Create+StartContainer with runc: the exec of
// `runc run --detach` alone, on the very container huskd prepared. Its
// lane has huskd create each container (rootfs, bundle; untimed), then
// runs, and times, the command huskd's monitor would run at
// StartContainer: the same arguments, from a sealed copy of runc as huskd
// execs it, but under a runc root of its own, so that huskd never knows
// the container ran. The container is killed and deleted at the stop step
// and huskd removes what it made at the remove step, untimed.
type runcFloor struct {
	dir     string   // the runc root, logs and pid files
	path    string   // runc on disk
	runc    *os.File // its sealed copy
	devNull *os.File // the containers' stdio
	state   string   // huskd's state dir, where the bundles are
	ran     []string
}

// runcFloorRow names the floor's rows.
const runcFloorRow = "[runc floor]"

func newRuncFloor(huskState string) (*runcFloor, error) {
	path, err := exec.LookPath("runc")
	if err != nil {
		return nil, err
	}
	sealed, err := ociruntime.SealedCopy(path)
	if err != nil {
		return nil, err
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		sealed.Close()
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hbench-runcfloor-")
	if err != nil {
		sealed.Close()
		devNull.Close()
		return nil, err
	}
	return &runcFloor{dir: dir, path: path, runc: sealed, devNull: devNull, state: huskState}, nil
}

func (f *runcFloor) command(args ...string) *exec.Cmd {
	// As huskd names its copy for the monitors.
	exe := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.runc.Fd())
	cmd := exec.Command(exe, append([]string{"--root", filepath.Join(f.dir, "root")}, args...)...)
	cmd.Args[0] = f.path // as the monitor names it
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// run starts huskd's container id with runc and returns how long the
// exec took.
func (f *runcFloor) run(id string) (time.Duration, error) {
	bundle := filepath.Join(f.state, "containers", id)
	cmd := f.command("--log="+filepath.Join(f.dir, id+".log"), "--log-format=json",
		"run", "--detach", "--bundle", bundle, "--pid-file", filepath.Join(f.dir, id+".pid"), id)
	cmd.Dir = bundle
	// Not pipes: the container keeps its stdio, and a pipe would keep
	// Wait waiting for it.
	stderr, err := os.Create(filepath.Join(f.dir, id+".stderr"))
	if err != nil {
		return 0, err
	}
	defer stderr.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f.devNull, f.devNull, stderr
	// Recorded first: a run that fails half-way may leave a container, a
	// cgroup or a process, which close deletes with the rest.
	f.ran = append(f.ran, id)
	t := time.Now()
	err = cmd.Run()
	took := time.Since(t)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(f.dir, id+".log"))
		out, _ := os.ReadFile(stderr.Name())
		// What the copy's descriptor is now, in case it is no more.
		exe, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.runc.Fd()))
		return 0, fmt.Errorf("runc run %s (runc at %q): %v: %s %s", id, exe, err, out, log)
	}
	return took, nil
}

// remove kills and deletes container id.
func (f *runcFloor) remove(id string) error {
	if out, err := f.command("delete", "--force", id).CombinedOutput(); err != nil {
		return fmt.Errorf("runc delete %s: %v: %s", id, err, out)
	}
	f.ran = slices.DeleteFunc(f.ran, func(r string) bool { return r == id })
	return nil
}

// floorRun times the runtime's exec of huskd's container id. The
// container then lives as the other lanes' do: the stop step deletes it
// from runc (remove) and the remove step has huskd remove what it made,
// both untimed. Deleted at once, its teardown would fall on the next
// lane's call, and the floor's pod and runc root would hold fewer
// containers than the others'.
func (l *containerLane) floorRun(id string, timed bool, rec sideRecord) error {
	took, err := l.floor.run(id)
	if err != nil {
		return err
	}
	if timed {
		l.add(rec, "Create+StartContainer", ms(took))
	}
	return nil
}

// close deletes every container the floor ran (or tried to) and did not
// remove, and its dir.
func (f *runcFloor) close() {
	for _, id := range f.ran {
		_ = f.command("delete", "--force", id).Run()
	}
	f.runc.Close()
	f.devNull.Close()
	_ = os.RemoveAll(f.dir)
}
