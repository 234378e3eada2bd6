package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/config"
	"github.com/huskrt/husk/internal/container"
	"github.com/huskrt/husk/internal/cri"
	"github.com/huskrt/husk/internal/image"
	"github.com/huskrt/husk/internal/metrics"
	"github.com/huskrt/husk/internal/network"
	"github.com/huskrt/husk/internal/nodecheck"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/pausesetup"
	"github.com/huskrt/husk/internal/sandbox"
	"github.com/huskrt/husk/internal/store"
)

// recoverTimeout bounds the reconciliation of the state on disk at start.
const recoverTimeout = 5 * time.Minute

// serve runs huskd until SIGTERM or SIGINT: build the parts, reconcile
// their state with the machine, serve the CRI.
func serve(cfg *config.Config, stderr io.Writer) error {
	log := newLogger(cfg.LogFormat, cfg.LogLevel, stderr)
	// Taken before any child starts: none of them may inherit it.
	sd := newNotifier()
	// From here on SIGTERM means a clean stop, also before the socket
	// serves: a supervisor may stop huskd at any moment.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	if err := prepareProcess(cfg); err != nil {
		return err
	}
	d, err := build(cfg, log)
	if err != nil {
		return err
	}
	defer d.close()
	// Up before recovery, so a slow one can be watched and profiled.
	stopOps, err := d.startOps()
	if err != nil {
		return err
	}
	defer stopOps()
	if err := d.recover(); err != nil {
		return err
	}
	return d.serve(sigs, sd)
}

// prepareProcess makes huskd a child subreaper and makes its directories.
func prepareProcess(cfg *config.Config) error {
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
	return nil
}

// daemon is huskd's parts. build makes them in one fixed order, each from
// the config and the parts made before it; nothing is set afterwards.
type daemon struct {
	cfg        *config.Config
	log        *slog.Logger
	store      *store.Store
	network    *network.Manager
	runtimes   *ociruntime.Handlers
	pause      string // the infra binary
	monitor    string // husk-monitor
	images     *image.Service
	events     *cri.Events
	sandboxes  *sandbox.Manager
	containers *container.Manager
	// metrics is nil when [metrics] is off: nothing records then.
	metrics *metrics.Metrics
}

// build makes the parts: store, network, runtimes, images, sandboxes,
// containers. Sandboxes and containers know nothing of each other; the CRI
// handlers drive what spans both.
func build(cfg *config.Config, log *slog.Logger) (*daemon, error) {
	d := &daemon{cfg: cfg, log: log, events: cri.NewEvents(), metrics: newMetrics(cfg)}
	for _, step := range []func() error{
		d.openStore, d.openNetwork, d.openRuntimes, d.openImages, d.newSandboxes, d.newContainers,
	} {
		if err := step(); err != nil {
			d.close()
			return nil, err
		}
	}
	return d, nil
}

// close releases what build opened. Running pods are left alone.
func (d *daemon) close() {
	if d.sandboxes != nil {
		d.sandboxes.Close()
	}
	if d.containers != nil {
		d.containers.Close()
	}
	if d.store != nil {
		d.store.Close()
	}
}

func (d *daemon) openStore() (err error) {
	d.store, err = store.Open(filepath.Join(d.cfg.Root, "husk.db"))
	return err
}

// openNetwork writes the default CNI network when asked and none exists;
// a network that is not ready yet is reported by Status, not fatal.
func (d *daemon) openNetwork() (err error) {
	cfg := d.cfg
	if cfg.CNI.WriteDefault {
		p, written, err := network.WriteDefaultConfig(cfg.CNI.ConfDir, network.DefaultNetwork{
			Name: cfg.CNI.DefaultName, Bridge: cfg.CNI.DefaultBridge, Subnet: cfg.CNI.DefaultSubnet,
		})
		if err != nil {
			d.log.Warn("default CNI network not written", "error", err)
		} else if written {
			d.log.Info("wrote default CNI network", "path", p)
		}
	}
	d.network, err = network.New(network.Options{
		ConfDir: cfg.CNI.ConfDir, BinDirs: cfg.CNI.BinDirs, CacheDir: cfg.CNICacheDir(),
		NetnsDir: d.netnsDir(), Timeout: time.Duration(cfg.CNI.Timeout), Logger: d.log,
	})
	if err != nil {
		return err
	}
	if err := d.network.Status(); err != nil {
		d.log.Warn("CNI network not ready", "error", err)
	}
	return nil
}

func (d *daemon) netnsDir() string { return filepath.Join(d.cfg.State, "netns") }

// openRuntimes finds each handler's runtime. Only the default one must be
// there: a missing other handler is logged and not offered. A config that
// names no default gets crun where it can run, else runc
// (nodecheck.DefaultRuntime).
func (d *daemon) openRuntimes() (err error) {
	cfg := d.cfg
	def := cfg.DefaultRuntime
	if def == "" {
		var why string
		def, why = nodecheck.DefaultRuntime(runtimePaths(cfg))
		d.log.Info("default runtime handler chosen", "handler", def, "why", why)
	}
	var found []*ociruntime.Runtime
	for name, r := range cfg.Runtimes {
		rt, err := ociruntime.New(name, r.Path, cfg.RuntimeRoot(name), cfg.CgroupDriver == "systemd")
		if err != nil {
			if name == def {
				return err
			}
			d.log.Warn("runtime handler unavailable", "handler", name, "error", err)
			continue
		}
		direct, explicit := cfg.InfraDirect(name)
		if direct && !pausesetup.Supported {
			if explicit {
				return fmt.Errorf("runtimes.%s.infra: direct: husk-pause has no setup entry point on %s", name, runtime.GOARCH)
			}
			direct = false
		}
		rt.DirectInfra = direct
		found = append(found, rt)
	}
	d.runtimes, err = ociruntime.NewHandlers(def, found...)
	return err
}

// runtimePaths is what nodecheck needs to choose the default handler.
func runtimePaths(cfg *config.Config) nodecheck.Options {
	o := nodecheck.Options{Runtimes: map[string]string{}}
	for h, r := range cfg.Runtimes {
		o.Runtimes[h] = r.Path
	}
	return o
}

func (d *daemon) openImages() (err error) {
	var pinned []string
	if d.cfg.PauseImage != "" {
		pinned = append(pinned, d.cfg.PauseImage)
	}
	d.images, err = image.New(image.Options{
		Root: filepath.Join(d.cfg.Root, "images"), DB: d.store.DB(), Registries: registries(d.cfg.Registries),
		PullProgressTimeout: time.Duration(d.cfg.ImagePullProgressTimeout), PinnedImages: pinned,
		MaxConcurrentDownloads: d.cfg.MaxConcurrentDownloads,
		Pulls:                  recorder[image.PullObserver](d.metrics), Logger: d.log,
	})
	return err
}

// registries maps the config's registry tables to the image store's
// options. The two types have the same fields: a field added to one and
// not the other stops this conversion from compiling.
func registries(in map[string]config.Registry) map[string]image.Registry {
	out := make(map[string]image.Registry, len(in))
	for host, r := range in {
		out[host] = image.Registry(r)
	}
	return out
}

func (d *daemon) newSandboxes() error {
	cfg := d.cfg
	var err error
	if d.pause, err = findPause(cfg.PauseBinary); err != nil {
		return err
	}
	if d.monitor, err = findSibling("husk-monitor"); err != nil {
		return err
	}
	d.sandboxes, err = sandbox.New(sandbox.Options{
		StateDir: cfg.State, NetnsDir: d.netnsDir(), Store: d.store, Network: d.network,
		Runtimes: d.runtimes, PauseBinary: d.pause, MonitorBinary: d.monitor,
		CgroupDriver: cfg.CgroupDriver, CgroupParent: cfg.CgroupParent, ShmSize: cfg.ShmSize,
		InfraOOMScoreAdj: cfg.InfraOOMScoreAdj, Events: d.events, Phases: d.metrics.SandboxPhases(), Logger: d.log,
	})
	return err
}

func (d *daemon) newContainers() error {
	var err error
	d.containers, err = container.New(container.Options{
		RootDir: d.cfg.Root, StateDir: d.cfg.State, Store: d.store,
		Images: d.images, Sandboxes: sandboxInfos{d.sandboxes},
		Runtimes: d.runtimes, MonitorBinary: d.monitor, CgroupDriver: d.cfg.CgroupDriver,
		CDISpecDirs: d.cfg.CDI.SpecDirs, LayerRefresh: time.Duration(d.cfg.Stats.WritableLayerRefresh),
		Events: d.events, Phases: d.metrics.ContainerPhases(), Logger: d.log,
	})
	return err
}

// sandboxInfos tells the container manager what it needs of a sandbox.
type sandboxInfos struct{ sandboxes *sandbox.Manager }

func (s sandboxInfos) Sandbox(id string) (container.SandboxInfo, error) {
	rec, cfg, err := s.sandboxes.Get(id)
	if err != nil {
		return container.SandboxInfo{}, err
	}
	return container.SandboxInfo{
		ID: rec.ID, Ready: rec.State == sandbox.StateReady, Handler: rec.Handler, Config: cfg,
		InfraPID: rec.InfraPID, NetnsPath: rec.NetnsPath, ShmPath: rec.ShmPath,
		Dir: s.sandboxes.Dir(rec.ID), CgroupParent: rec.CgroupParent,
	}, nil
}

// recover reconciles the state on disk with the machine. Containers come
// first: they hold their image layers again, and what runs in a runtime's
// state under their IDs is theirs, which the sandbox recovery must know
// before it deletes what belongs to nobody. Image GC comes last, once
// every layer in use is held.
func (d *daemon) recover() error {
	ctx, cancel := context.WithTimeout(context.Background(), recoverTimeout)
	defer cancel()
	if err := d.containers.Recover(ctx); err != nil {
		return err
	}
	if err := d.sandboxes.Recover(ctx, d.containers.IDs()); err != nil {
		return err
	}
	return d.images.GC()
}

// serve serves the streaming server and the CRI until a signal or a
// failure of the CRI server, telling systemd when it is ready and when it
// stops.
func (d *daemon) serve(sigs <-chan os.Signal, sd *notifier) error {
	stream, err := d.startStream()
	if err != nil {
		return err
	}
	defer stream.Close()
	srv := d.criServer(stream)
	lis, err := listen(d.cfg.Listen)
	if err != nil {
		return err
	}
	cfg := d.cfg
	d.log.Info("huskd serving", "version", version, "socket", cfg.Listen, "root", cfg.Root, "state", cfg.State,
		"default_runtime", d.runtimes.Default(), "handlers", d.runtimes.Names(), "pause", d.pause, "streaming", stream.Addr())
	stopReaper := make(chan struct{})
	defer close(stopReaper)
	go reapOrphans(d.log, 2*time.Second, stopReaper)
	return serveUntilSignal(d.log, srv, lis, sigs, sd)
}

// startStream starts the Exec, Attach and PortForward server.
func (d *daemon) startStream() (*cri.StreamServer, error) {
	var streamTLS *tls.Config
	if c := d.cfg.Stream; c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("stream.tls_cert: %w", err)
		}
		streamTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	stream, err := cri.NewStreamServer(cri.StreamOptions{Address: d.cfg.Stream.Address, Port: d.cfg.Stream.Port, TLS: streamTLS,
		Logger: d.log, Sessions: recorder[cri.SessionRecorder](d.metrics)}, d.containers, d.sandboxes)
	if err != nil {
		return nil, err
	}
	go func() {
		if err := stream.Serve(); err != nil {
			d.log.Error("streaming server stopped", "error", err)
		}
	}()
	return stream, nil
}

// criServer is the gRPC server of the CRI RuntimeService and ImageService.
func (d *daemon) criServer(stream *cri.StreamServer) *grpc.Server {
	in := cri.Instrument{Log: d.log, Calls: recorder[cri.CallRecorder](d.metrics)}
	srv := grpc.NewServer(grpc.UnaryInterceptor(in.Unary()), grpc.StreamInterceptor(in.Stream()), cri.BufferPool())
	runtimeapi.RegisterRuntimeServiceServer(srv, cri.NewRuntimeServer(cri.RuntimeOptions{
		Version: version, Sandboxes: d.sandboxes, Containers: d.containers, Events: d.events, Stream: stream,
		Network: d.network, Handlers: d.runtimes.Names(), CgroupDriver: d.cfg.CgroupDriver, ConfigInfo: d.cfg.Redacted(),
		Logger: d.log,
	}))
	runtimeapi.RegisterImageServiceServer(srv, cri.NewImageServer(d.images, d.containers))
	return srv
}

// gracefulStopTimeout bounds the wait for running calls at a stop.
const gracefulStopTimeout = 10 * time.Second

// serveUntilSignal serves srv on lis until a signal, then lets running
// calls finish (bounded); pods keep running.
func serveUntilSignal(log *slog.Logger, srv *grpc.Server, lis net.Listener, sigs <-chan os.Signal, sd *notifier) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	// The socket accepts from here: clients queue until Serve takes them.
	if err := sd.ready(); err != nil {
		log.Warn("could not tell systemd huskd is ready", "error", err)
	}
	select {
	case sig := <-sigs:
		log.Info("stopping: pods keep running", "signal", sig.String())
		if err := sd.stopping(); err != nil {
			log.Warn("could not tell systemd huskd is stopping", "error", err)
		}
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(gracefulStopTimeout):
			srv.Stop()
		}
		return nil
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}
}
