package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/ids"
	"github.com/huskrt/husk/internal/network"
	"github.com/huskrt/husk/internal/oci"
	"github.com/huskrt/husk/internal/ociruntime"
	"github.com/huskrt/husk/internal/phase"
)

// stepTimeout bounds one runtime or CNI step that runs detached from the
// request: the kubelet's own RunPodSandbox timeout is 4 minutes.
const stepTimeout = 4 * time.Minute

// Name is the reserved name of a sandbox: what makes two RunPodSandbox calls
// the same pod attempt.
func Name(md *runtimeapi.PodSandboxMetadata) string {
	return md.GetName() + "_" + md.GetNamespace() + "_" + md.GetUid() + "_" + strconv.FormatUint(uint64(md.GetAttempt()), 10)
}

// Run creates a sandbox and returns its ID once it is READY. A call with the
// name of a sandbox being created by an identical call waits for that one and
// returns its ID: the kubelet retries RunPodSandbox after its own timeout
// with the same config, and must not be told the name is taken by itself.
func (m *Manager) Run(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (string, error) {
	if err := ValidateConfig(cfg); err != nil {
		return "", err
	}
	rt, err := m.opts.Runtimes.Get(handler)
	if err != nil {
		return "", err
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("encode sandbox config: %w", err)
	}
	sum := sha256.Sum256(append([]byte(rt.Handler+"\x00"), raw...))
	hash := hex.EncodeToString(sum[:])
	name := Name(cfg.GetMetadata())
	for {
		sb := &Sandbox{config: cfg, done: make(chan struct{}), rec: Record{
			ID: ids.New(), Name: name, ConfigHash: hash, Config: raw, Handler: rt.Handler, InfraDirect: rt.DirectInfra,
			State: StateCreating, CreatedAt: time.Now().UnixNano(),
		}}
		// sb is new: nobody else can hold its lock, so taking it before
		// the index's cannot deadlock.
		sb.mu.Lock()
		if holder, ok := m.index.Reserve(sb.rec.ID, name, sb); !ok {
			sb.mu.Unlock()
			id, retry, err := m.awaitHolder(ctx, holder, hash)
			if retry {
				continue
			}
			return id, err
		}
		err := m.create(ctx, sb, rt)
		sb.runErr = err
		close(sb.done)
		sb.mu.Unlock()
		if err != nil {
			return "", err
		}
		return sb.rec.ID, nil
	}
}

// awaitHolder waits for the Run holding a name wanted with the config of
// the given hash. An identical Run gives its sandbox; one that failed and
// was undone lets the caller retry (retry true).
func (m *Manager) awaitHolder(ctx context.Context, holder *Sandbox, hash string) (id string, retry bool, err error) {
	hid, name := holder.rec.ID, holder.rec.Name // immutable after creation
	if holder.rec.ConfigHash != hash {
		return "", false, fmt.Errorf("pod sandbox name %q is reserved by sandbox %s with a different config: %w", name, hid, errdefs.ErrAlreadyExists)
	}
	select {
	case <-holder.done:
	case <-ctx.Done():
		return "", false, fmt.Errorf("wait for sandbox %s being created with the same name: %w", hid, ctx.Err())
	}
	if holder.runErr != nil {
		if h, ok := m.index.Named(name); !ok || h != holder {
			return "", true, nil // it was undone and unindexed: try again ourselves
		}
		return "", false, fmt.Errorf("pod sandbox name %q is reserved by sandbox %s, whose creation failed and is not yet cleaned up: %w", name, hid, errdefs.ErrAlreadyExists)
	}
	if v := holder.view(); v.State == StateReady {
		return v.ID, false, nil
	}
	return "", false, fmt.Errorf("pod sandbox name %q is reserved by sandbox %s, which is not ready: %w", name, hid, errdefs.ErrAlreadyExists)
}

// create runs the steps of RunPodSandbox with sb.mu held. The record is
// persisted first; after that, any failure undoes every step with one
// idempotent teardown (undoLocked), which releases what the record says
// exists. What cannot be undone leaves the sandbox NOTREADY in the store,
// for stop and remove to retry.
func (m *Manager) create(ctx context.Context, sb *Sandbox, rt *ociruntime.Runtime) (err error) {
	rec := &sb.rec
	log := m.logger(rec, sb.config)
	timer := phase.Start(m.opts.Phases)
	// The record goes to disk before anything it owns exists, so a crash
	// at any later point leaves something recovery can undo.
	if err := m.persistNew(sb); err != nil {
		return err
	}
	timer.Mark("persist")
	defer func() {
		if err == nil {
			return
		}
		err = fmt.Errorf("sandbox %s: %w", rec.ID, err)
		if uerr := m.undoLocked(sb, log); uerr != nil {
			log.Error("undo of failed RunPodSandbox incomplete; sandbox kept NOTREADY for stop/remove to retry", "error", uerr)
			err = errors.Join(err, fmt.Errorf("undo: %w", uerr))
		}
	}()

	// A cancelled request does not kill the runtime or the CNI plugins
	// half-way: they run on opCtx, and the request's end is noticed
	// between steps and undone. Only a plugin that hangs past the [cni]
	// timeout is killed (internal/network), and the undo's DEL releases
	// what its ADD had done.
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stepTimeout)
	defer cancel()
	// Whatever the outcome, the monitor's start has ended before the undo
	// above runs (defers run last first), so that the undo ends it.
	monitorUp := m.startMonitor(opCtx, rec.ID, timer)
	defer func() { _, _ = monitorUp() }()
	steps := []struct {
		name string
		run  func() error
	}{
		{"files", func() error { return m.writeFiles(sb) }},
		{"netns", func() error { return m.createNetns(sb) }},
		// Marks its parts, infra and network, which run at once.
		{"infra+network", func() error { return m.startPod(opCtx, sb, rt, monitorUp, timer) }},
		{"ready", func() error { return m.markReady(sb) }},
	}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("request ended before step %s: %w", step.name, err)
		}
		if err := step.run(); err != nil {
			return err
		}
		timer.Mark(step.name)
	}
	log.Debug("sandbox ready", timer.Attrs()...)
	m.emit(rec.ID, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT)
	m.emit(rec.ID, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	return nil
}

// persistNew fixes where everything the sandbox will own goes (netns pin,
// /dev/shm, cgroup), then writes the record and reserves its name in one
// transaction: recovery after a crash at any later step knows what to
// undo. On failure the sandbox leaves the index; nothing else exists yet.
func (m *Manager) persistNew(sb *Sandbox) error {
	rec, cfg := &sb.rec, sb.config
	if hostNet, _ := podNamespaces(cfg); !hostNet {
		rec.NetnsPath = filepath.Join(m.opts.NetnsDir, rec.ID)
	}
	if cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetIpc() != runtimeapi.NamespaceMode_NODE {
		rec.ShmPath = filepath.Join(m.dir(rec.ID), "shm")
	}
	rec.BootID = m.bootID
	err := m.planCgroup(sb)
	if err == nil {
		err = m.records.Create(rec.ID, rec.Name, rec, &sb.snapshot)
	}
	if err != nil {
		m.unindex(sb)
		return err
	}
	return nil
}

// planCgroup fixes the pod's cgroup parent (the config's, else huskd's
// default) and the infra's cgroup under it.
func (m *Manager) planCgroup(sb *Sandbox) error {
	rec := &sb.rec
	parent := sb.config.GetLinux().GetCgroupParent()
	if parent == "" {
		parent = m.opts.CgroupParent
	}
	parent, err := oci.CgroupParent(m.opts.CgroupDriver, parent)
	if err == nil {
		rec.CgroupsPath, err = oci.CgroupsPath(m.opts.CgroupDriver, parent, rec.ID)
	}
	if err != nil {
		return fmt.Errorf("sandbox %s: %v: %w", rec.ID, err, errdefs.ErrInvalidArgument)
	}
	rec.CgroupParent = parent
	return nil
}

// podNamespaces tells whether the pod uses the node's network and whether
// it has a user namespace of its own.
func podNamespaces(cfg *runtimeapi.PodSandboxConfig) (hostNet, ownUserns bool) {
	hostNet = cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
	_, _, ownUserns = oci.PodIDMappings(cfg)
	return hostNet, ownUserns
}

// makeDirs makes the sandbox's own dir and, when the kubelet has not, the
// pod log directory.
func (m *Manager) makeDirs(sb *Sandbox) error {
	if err := os.MkdirAll(m.dir(sb.rec.ID), 0o711); err != nil {
		return fmt.Errorf("make sandbox dir: %w", err)
	}
	logDir := sb.config.GetLogDirectory()
	if logDir == "" {
		return nil
	}
	if _, err := os.Stat(logDir); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fmt.Errorf("make log directory: %w", err)
	}
	sb.rec.LogDirCreated = true
	return nil
}

// writeFiles makes the sandbox's dirs, writes resolv.conf, hostname and
// hosts, and mounts the pod's /dev/shm.
func (m *Manager) writeFiles(sb *Sandbox) error {
	if err := m.makeDirs(sb); err != nil {
		return err
	}
	if err := writeSandboxFiles(m.dir(sb.rec.ID), sb.config, m.opts.HostResolvConf); err != nil {
		return fmt.Errorf("sandbox files: %w", err)
	}
	if sb.rec.ShmPath == "" {
		return nil
	}
	return mountShm(sb.rec.ShmPath, m.opts.ShmSize)
}

// createNetns creates and pins the pod's network namespace. A pod with its
// own user namespace gets the one its infra creates instead (owned by that
// user namespace, so its containers can join it), pinned by startPod.
func (m *Manager) createNetns(sb *Sandbox) error {
	if hostNet, ownUserns := podNamespaces(sb.config); hostNet || ownUserns {
		return nil
	}
	p, err := m.opts.Network.CreateNetns(sb.rec.ID)
	if err != nil {
		return fmt.Errorf("create network namespace: %w", err)
	}
	sb.rec.NetnsPath = p
	return nil
}

// startPod starts the infra and attaches the pod to the network at once:
// the CNI plugins and the OCI runtime each take tens of milliseconds and
// neither needs the other, only the pinned namespace both use. With a user
// namespace, CNI waits for the infra, whose namespace is pinned then.
func (m *Manager) startPod(ctx context.Context, sb *Sandbox, rt *ociruntime.Runtime, monitorUp monitorStart, timer *phase.Timer) error {
	rec := &sb.rec
	hostNet, ownUserns := podNamespaces(sb.config)
	var added <-chan addResult
	infraNetns := rec.NetnsPath
	if !hostNet && !ownUserns {
		added = m.attach(ctx, sb)
	}
	if ownUserns {
		infraNetns = "" // a new one, created by the runtime in the pod's user namespace
	}
	start := time.Now()
	infraErr := m.startInfra(ctx, sb, rt, monitorUp, infraNetns)
	timer.Add("infra", time.Since(start))
	if !hostNet && ownUserns && infraErr == nil {
		p, err := m.opts.Network.PinNetns(rec.ID, rec.InfraPID)
		if err != nil {
			return fmt.Errorf("pin network namespace: %w", err)
		}
		rec.NetnsPath = p
		added = m.attach(ctx, sb)
	}
	if added != nil {
		r := <-added
		timer.Add("network", r.took)
		if r.err != nil {
			return errors.Join(fmt.Errorf("setup network: %w", r.err), infraErr)
		}
		rec.IPs = r.res.IPs
	}
	return infraErr
}

// addResult is the outcome of a CNI ADD.
type addResult struct {
	res  network.Result
	err  error
	took time.Duration
}

// attach runs CNI ADD in the background. The record says the pod is
// attached before the ADD starts: a DEL is then never forgotten.
func (m *Manager) attach(ctx context.Context, sb *Sandbox) <-chan addResult {
	sb.rec.NetworkAttached = true
	att := m.attachment(&sb.rec, sb.config)
	done := make(chan addResult, 1)
	go func() {
		start := time.Now()
		res, err := m.opts.Network.Setup(ctx, att)
		done <- addResult{res, err, time.Since(start)}
	}()
	return done
}

// markReady makes the sandbox READY, persisted, unless its infra already
// exited.
func (m *Manager) markReady(sb *Sandbox) error {
	select {
	case <-sb.infra.Done():
		return fmt.Errorf("infra process %d exited during start", sb.rec.InfraPID)
	default:
	}
	sb.rec.State = StateReady
	if err := m.persistLocked(sb); err != nil {
		sb.rec.State = StateCreating
		return err
	}
	return nil
}

// attachment is what CNI needs to know of a sandbox.
func (m *Manager) attachment(rec *Record, cfg *runtimeapi.PodSandboxConfig) network.Attachment {
	md := cfg.GetMetadata()
	a := network.Attachment{
		SandboxID: rec.ID, NetnsPath: rec.NetnsPath,
		PodName: md.GetName(), PodNamespace: md.GetNamespace(), PodUID: md.GetUid(),
	}
	for _, p := range cfg.GetPortMappings() {
		if p.GetHostPort() <= 0 {
			continue // only host ports need the portmap plugin
		}
		proto := "tcp"
		switch p.GetProtocol() {
		case runtimeapi.Protocol_UDP:
			proto = "udp"
		case runtimeapi.Protocol_SCTP:
			proto = "sctp"
		}
		a.PortMappings = append(a.PortMappings, network.PortMapping{
			Protocol: proto, ContainerPort: p.GetContainerPort(), HostPort: p.GetHostPort(), HostIP: p.GetHostIp(),
		})
	}
	if dns := cfg.GetDnsConfig(); dns != nil {
		a.DNS = &network.DNS{Servers: dns.GetServers(), Searches: dns.GetSearches(), Options: dns.GetOptions()}
	}
	return a
}

// infraExited runs when the watcher sees the infra process exit: a pod
// lives exactly as long as its infra.
func (m *Manager) infraExited(sb *Sandbox) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.rec.State != StateReady {
		return // being created (create notices) or already stopped
	}
	sb.rec.State = StateNotReady
	log := m.logger(&sb.rec, sb.config)
	if err := m.persistLocked(sb); err != nil {
		log.Error("infra exited; persisting NOTREADY failed", "error", err)
	}
	log.Warn("infra process exited: sandbox NOTREADY", "pid", sb.rec.InfraPID)
	m.emit(sb.rec.ID, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
}
