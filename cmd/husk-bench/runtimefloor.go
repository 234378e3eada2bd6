package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/huskrt/husk/internal/nodecheck"
	"github.com/huskrt/husk/internal/ociruntime"
)

// runtimeFloor is the floor of Create+StartContainer with one OCI
// runtime: the exec of `<runtime> run --detach` alone, on the very
// container huskd prepared. Its lane has huskd create each container
// (rootfs, bundle; untimed), then runs, and times, the command huskd's
// monitor would run at StartContainer: the same arguments, from the file
// huskd would exec (for runc a sealed copy of its binary), but under a
// runtime root of its own, so that huskd never knows the container ran.
// The container is killed and deleted at the stop step and huskd removes
// what it made at the remove step, untimed.
type runtimeFloor struct {
	rt      *ociruntime.Runtime // as huskd makes its handler, rooted in dir
	dir     string              // the runtime root, logs and pid files
	devNull *os.File            // the containers' stdio
	state   string              // huskd's state dir, where the bundles are
	ran     []string
}

// floorRow is the suffix of the rows of handler's floor.
func floorRow(handler string) string { return "[" + handler + " floor]" }

// floorRows are the rows of the floors: runc's, and crun's where it is
// husk's default handler.
var floorRows = []string{floorRow("runc"), floorRow("crun")}

// floorHandlers are the handlers whose floor the containers scenario
// measures: runc, and crun when husk, on its defaults, runs pods with it.
func floorHandlers() []string {
	if h, _ := nodecheck.DefaultRuntime(nodecheck.Options{Runtimes: map[string]string{"crun": "crun"}}); h == "crun" {
		return []string{"runc", "crun"}
	}
	return []string{"runc"}
}

func newRuntimeFloor(handler, huskState string) (*runtimeFloor, error) {
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hbench-"+handler+"floor-")
	if err != nil {
		devNull.Close()
		return nil, err
	}
	f := &runtimeFloor{dir: dir, devNull: devNull, state: huskState}
	if f.rt, err = ociruntime.New(handler, handler, filepath.Join(dir, "root"), false); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

func (f *runtimeFloor) command(args ...string) *exec.Cmd {
	cmd := exec.Command(f.rt.Path, append([]string{"--root", f.rt.Root}, args...)...)
	cmd.Path = f.rt.ExecPath() // what huskd has its monitors exec, named as they name it
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// run starts huskd's container id with the runtime and returns how long
// the exec took.
func (f *runtimeFloor) run(id string) (time.Duration, error) {
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
		// What the exec'd file is now, in case it is no more.
		exe, _ := os.Readlink(cmd.Path)
		return 0, fmt.Errorf("%s run %s (%s at %q): %v: %s %s", f.rt.Handler, id, cmd.Path, exe, err, out, log)
	}
	return took, nil
}

// remove kills and deletes container id.
func (f *runtimeFloor) remove(id string) error {
	if out, err := f.command("delete", "--force", id).CombinedOutput(); err != nil {
		return fmt.Errorf("%s delete %s: %v: %s", f.rt.Handler, id, err, out)
	}
	f.ran = slices.DeleteFunc(f.ran, func(r string) bool { return r == id })
	return nil
}

// floorRun times the runtime's exec of huskd's container id. The
// container then lives as the other lanes' do: the stop step deletes it
// from the runtime (remove) and the remove step has huskd remove what it
// made, both untimed. Deleted at once, its teardown would fall on the
// next lane's call, and the floor's pod and runtime root would hold fewer
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
func (f *runtimeFloor) close() {
	if f.rt != nil {
		for _, id := range f.ran {
			_ = f.command("delete", "--force", id).Run()
		}
	}
	f.devNull.Close()
	_ = os.RemoveAll(f.dir)
}
