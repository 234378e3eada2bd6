// Command huskd is the husk daemon: the CRI v1 RuntimeService and
// ImageService over gRPC on a unix socket. It holds flags, configuration and
// wiring; the logic lives in internal/.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/config"
	"github.com/huskrt/husk/internal/container"
	"github.com/huskrt/husk/internal/cri"
	"github.com/huskrt/husk/internal/image"
	"github.com/huskrt/husk/internal/network"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/sandbox"
	"github.com/huskrt/husk/internal/store"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

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
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (subcommands: config default, version)", fs.Arg(0))
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

func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func serve(cfg *config.Config, stderr io.Writer) error {
	log := newLogger(cfg.LogLevel, stderr)
	// From here on SIGTERM means a clean stop, also before the socket
	// serves: a supervisor may stop huskd at any moment.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	// Infra processes are reparented to huskd when their runtime exits, so
	// huskd reaps them (through their pidfds) even where PID 1 does not.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	for _, d := range []string{cfg.Root, cfg.State, filepath.Dir(cfg.Listen)} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fmt.Errorf("make %s: %w", d, err)
		}
	}
	st, err := store.Open(filepath.Join(cfg.Root, "husk.db"))
	if err != nil {
		return err
	}
	defer st.Close()

	if cfg.CNI.WriteDefault {
		p, written, err := network.WriteDefaultConfig(cfg.CNI.ConfDir, network.DefaultNetwork{
			Name: cfg.CNI.DefaultName, Bridge: cfg.CNI.DefaultBridge, Subnet: cfg.CNI.DefaultSubnet,
		})
		if err != nil {
			log.Warn("default CNI network not written", "error", err)
		} else if written {
			log.Info("wrote default CNI network", "path", p)
		}
	}
	netnsDir := filepath.Join(cfg.State, "netns")
	netMgr, err := network.New(network.Options{
		ConfDir: cfg.CNI.ConfDir, BinDirs: cfg.CNI.BinDirs, CacheDir: cfg.CNICacheDir(),
		NetnsDir: netnsDir, Logger: log,
	})
	if err != nil {
		return err
	}
	if err := netMgr.Status(); err != nil {
		log.Warn("CNI network not ready", "error", err)
	}

	runtimes := map[string]*ociruntime.Runtime{}
	for name, r := range cfg.Runtimes {
		rt, err := ociruntime.New(name, r.Path, cfg.RuntimeRoot(name), cfg.CgroupDriver == "systemd")
		if err != nil {
			if name == cfg.DefaultRuntime {
				return err
			}
			log.Warn("runtime handler unavailable", "handler", name, "error", err)
			continue
		}
		runtimes[name] = rt
	}
	pause, err := findPause(cfg.PauseBinary)
	if err != nil {
		return err
	}

	monitorBin, err := findSibling("husk-monitor")
	if err != nil {
		return err
	}
	events := cri.NewEvents()
	var sandboxes *sandbox.Manager
	containers, err := container.New(container.Options{
		RootDir: cfg.Root, StateDir: cfg.State, Store: st,
		Sandbox:  func(id string) (container.SandboxInfo, error) { return sandboxInfo(sandboxes, cfg, id) },
		Runtimes: runtimes, DefaultRuntime: cfg.DefaultRuntime, MonitorBinary: monitorBin,
		CgroupDriver: cfg.CgroupDriver, Logger: log,
		OnEvent: func(r *container.Record, t container.EventType) {
			events.Publish(&runtimeapi.ContainerEventResponse{ContainerId: r.ID, ContainerEventType: runtimeapi.ContainerEventType(t)})
		},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := containers.Recover(ctx); err != nil {
		return err
	}

	sandboxes, err = sandbox.New(sandbox.Options{
		StateDir: cfg.State, NetnsDir: netnsDir, Store: st, Network: netMgr,
		Runtimes: runtimes, DefaultRuntime: cfg.DefaultRuntime, PauseBinary: pause,
		CgroupDriver: cfg.CgroupDriver, CgroupParent: cfg.CgroupParent, ShmSize: cfg.ShmSize,
		InfraOOMScoreAdj: cfg.InfraOOMScoreAdj, Logger: log,
		StopContainers:   containers.StopSandbox,
		RemoveContainers: containers.RemoveSandbox,
		KnownContainer:   containers.Known,
		OnEvent: func(id string, t sandbox.EventType) {
			events.Publish(&runtimeapi.ContainerEventResponse{ContainerId: id, ContainerEventType: runtimeapi.ContainerEventType(t)})
		},
	})
	if err != nil {
		return err
	}
	defer sandboxes.Close()
	if err := sandboxes.Recover(ctx); err != nil {
		return err
	}

	var pinned []string
	if cfg.PauseImage != "" {
		pinned = append(pinned, cfg.PauseImage)
	}
	images, err := image.New(image.Options{
		Root: filepath.Join(cfg.Root, "images"), DB: st.DB(), Registries: cfg.Registries,
		PullProgressTimeout: time.Duration(cfg.ImagePullProgressTimeout), PinnedImages: pinned,
		LayersInUse: containers.LayersInUse, Logger: log,
	})
	if err != nil {
		return err
	}
	containers.UseImages(images)

	var streamTLS *tls.Config
	if cfg.Stream.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.Stream.TLSCert, cfg.Stream.TLSKey)
		if err != nil {
			return fmt.Errorf("stream.tls_cert: %w", err)
		}
		streamTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	stream, err := cri.NewStreamServer(cri.StreamOptions{Address: cfg.Stream.Address, Port: cfg.Stream.Port, TLS: streamTLS}, containers, sandboxes)
	if err != nil {
		return err
	}
	defer stream.Close()
	go func() {
		if err := stream.Serve(); err != nil {
			log.Error("streaming server stopped", "error", err)
		}
	}()

	handlers := make([]string, 0, len(runtimes))
	for h := range runtimes {
		handlers = append(handlers, h)
	}
	sort.Strings(handlers)
	srv := grpc.NewServer(grpc.UnaryInterceptor(cri.UnaryInterceptor(log)))
	runtimeapi.RegisterRuntimeServiceServer(srv, cri.NewRuntimeServer(cri.RuntimeOptions{
		Version: version, Sandboxes: sandboxes, Containers: containers, Events: events, Stream: stream, Network: netMgr,
		Handlers: handlers, CgroupDriver: cfg.CgroupDriver, ConfigInfo: cfg, Logger: log,
	}))
	runtimeapi.RegisterImageServiceServer(srv, cri.NewImageServer(images))

	lis, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	log.Info("huskd serving", "version", version, "socket", cfg.Listen, "root", cfg.Root, "state", cfg.State,
		"default_runtime", cfg.DefaultRuntime, "handlers", handlers, "pause", pause, "streaming", stream.Addr())

	stopReaper := make(chan struct{})
	defer close(stopReaper)
	go reapOrphans(log, 2*time.Second, stopReaper)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case sig := <-sigs:
		log.Info("stopping: pods keep running", "signal", sig.String())
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			srv.Stop()
		}
		return nil
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}
}

// listen opens the CRI socket, replacing a stale one: the store's lock
// already proved no other huskd uses this root.
func listen(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s is in use by a running server (another huskd with another root?)", path)
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

// sandboxInfo tells the container manager what it needs of a sandbox.
func sandboxInfo(sandboxes *sandbox.Manager, cfg *config.Config, id string) (container.SandboxInfo, error) {
	rec, sbCfg, err := sandboxes.Get(id)
	if err != nil {
		return container.SandboxInfo{}, err
	}
	parent := sbCfg.GetLinux().GetCgroupParent()
	if parent == "" {
		parent = cfg.CgroupParent
	}
	return container.SandboxInfo{
		ID: rec.ID, Ready: rec.State == sandbox.StateReady, Handler: rec.Handler, Config: sbCfg,
		InfraPID: rec.InfraPID, NetnsPath: rec.NetnsPath, ShmPath: rec.ShmPath,
		Dir: sandboxes.Dir(rec.ID), CgroupParent: parent,
	}, nil
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
