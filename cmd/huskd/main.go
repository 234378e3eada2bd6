// Command huskd is the husk daemon: the CRI v1 RuntimeService and
// ImageService over gRPC on a unix socket. It holds flags, configuration and
// wiring; the logic lives in internal/.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/huskrt/husk/internal/config"
	"github.com/huskrt/husk/internal/proc"
	"golang.org/x/sys/unix"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// heapSampleRate is the Go runtime's default rate of heap profiling, which
// huskd turns on only with the pprof server ([debug] address).
const heapSampleRate = 512 * 1024

// heapRateChosen tells whether the operator set the rate through GODEBUG:
// huskd leaves it alone then.
var heapRateChosen = godebugSetsHeapRate(os.Getenv("GODEBUG"))

// Linking net/http/pprof turns heap profiling on for the whole life of the
// process: every 512 KiB allocated records a stack, and the profile's
// hash table and buckets stay resident (~0.5-1 MiB of a 110-pod huskd's
// ~11 MiB RssAnon). Nobody reads them unless [debug] is configured.
func init() {
	if !heapRateChosen {
		runtime.MemProfileRate = 0
	}
}

func godebugSetsHeapRate(godebug string) bool {
	for _, kv := range strings.Split(godebug, ",") {
		if k, _, ok := strings.Cut(kv, "="); ok && strings.TrimSpace(k) == "memprofilerate" {
			return true
		}
	}
	return false
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "huskd: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) >= 1 && args[0] == "config" {
		return configCommand(args[1:], stdout)
	}
	if len(args) >= 1 && args[0] == "check" {
		return checkCommand(args[1:], stdout, stderr)
	}
	if len(args) >= 1 && (args[0] == "version" || args[0] == "--version" || args[0] == "-v") {
		fmt.Fprintf(stdout, "huskd %s\n", version)
		return nil
	}
	fs := flag.NewFlagSet("huskd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "config file (default "+config.DefaultPath+" when present)")
	root := fs.String("root", "", "persistent state directory (default /var/lib/husk)")
	state := fs.String("state", "", "runtime state directory (default /run/husk)")
	listen := fs.String("listen", "", "CRI socket path (default /run/husk/husk.sock)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	logFormat := fs.String("log-format", "", "text or json (default text)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (subcommands: check, config default, version)", fs.Arg(0))
	}
	path, explicit := config.DefaultPath, false
	if *configPath != "" {
		path, explicit = *configPath, true
	}
	cfg, err := config.Load(path, explicit)
	if err != nil {
		return err
	}
	if *root != "" {
		cfg.Root = *root
	}
	if *state != "" {
		cfg.State = *state
		if *listen == "" && cfg.Listen == config.Default().Listen {
			cfg.Listen = filepath.Join(*state, "husk.sock")
		}
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *logLevel != "" {
		cfg.LogLevel = *logLevel
	}
	if *logFormat != "" {
		cfg.LogFormat = *logFormat
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	return serve(cfg, stderr)
}

func configCommand(args []string, stdout io.Writer) error {
	if len(args) != 1 || args[0] != "default" {
		return errors.New("usage: huskd config default")
	}
	b, err := config.Default().Marshal()
	if err != nil {
		return err
	}
	_, err = stdout.Write(b)
	return err
}

// listen opens the CRI socket, replacing a stale one: the store's lock
// already proved no other huskd uses this root.
func listen(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		pid, running := listenerRunning(c)
		c.Close()
		if running {
			return nil, fmt.Errorf("socket %s is in use by a running server (pid %d: another huskd with another root?)", path, pid)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return lis, nil
}

// listenerRunning tells whether the process that listens on the socket c
// is connected to still runs. A huskd killed -9 leaves its listening
// socket open a moment longer in its children that are between fork and
// exec (on a busy node, long enough for a restart to dial it): that
// socket is stale, not in use. SO_PEERCRED on a client socket names the
// process that called listen.
func listenerRunning(c net.Conn) (pid int, running bool) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, true
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, true
	}
	var cred *unix.Ucred
	if err := raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cred == nil {
		return 0, true
	}
	_, err = proc.StartTime(int(cred.Pid))
	return int(cred.Pid), !errors.Is(err, proc.ErrGone)
}

// findSibling locates a husk helper binary: beside huskd, else on PATH.
func findSibling(name string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s: not beside huskd nor on PATH: %w", name, err)
	}
	return p, nil
}

// findPause locates the infra binary: the configured path, else husk-pause
// beside huskd, else on PATH.
func findPause(configured string) (string, error) {
	if configured != "" {
		if _, err := os.Stat(configured); err != nil {
			return "", fmt.Errorf("pause_binary: %w", err)
		}
		return configured, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "husk-pause")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("husk-pause")
	if err != nil {
		return "", errors.New("husk-pause not found beside huskd nor on PATH; set pause_binary")
	}
	return p, nil
}
