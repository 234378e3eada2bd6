package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	"github.com/huskrt/husk/internal/store"
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
	rt, handler, err := m.runtimeFor(handler)
	if err != nil {
		return "", err
	}
	name := Name(cfg.GetMetadata())
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("encode sandbox config: %w", err)
	}
	sum := sha256.Sum256(append([]byte(handler+"\x00"), raw...))
	hash := hex.EncodeToString(sum[:])

	for {
		m.mu.Lock()
		holder := m.byName[name]
		if holder == nil {
			sb := &Sandbox{config: cfg, done: make(chan struct{})}
			sb.rec = Record{
				ID: ids.New(), Name: name, ConfigHash: hash, Config: raw, Handler: handler,
				State: StateCreating, CreatedAt: time.Now().UnixNano(),
			}
			// sb is new: nobody else can hold its lock, so taking it
			// under m.mu cannot deadlock.
			sb.mu.Lock()
			m.byID[sb.rec.ID] = sb
			m.byName[name] = sb
			m.mu.Unlock()
			err := m.create(ctx, sb, rt)
			sb.runErr = err
			close(sb.done)
			sb.mu.Unlock()
			if err != nil {
				return "", err
			}
			return sb.rec.ID, nil
		}
		m.mu.Unlock()

		if holder.rec.ConfigHash != hash { // immutable after creation
			return "", fmt.Errorf("pod sandbox name %q is reserved by sandbox %s with a different config: %w", name, holder.rec.ID, errdefs.ErrAlreadyExists)
		}
		select {
		case <-holder.done:
		case <-ctx.Done():
			return "", fmt.Errorf("wait for sandbox %s being created with the same name: %w", holder.rec.ID, ctx.Err())
		}
		if holder.runErr != nil {
			m.mu.Lock()
			kept := m.byName[name] == holder
			m.mu.Unlock()
			if !kept {
				continue // it was undone and unindexed: try again ourselves
			}
			return "", fmt.Errorf("pod sandbox name %q is reserved by sandbox %s, whose creation failed and is not yet cleaned up: %w", name, holder.rec.ID, errdefs.ErrAlreadyExists)
		}
		if v := holder.view(); v.State == StateReady {
			return v.ID, nil
		}
		return "", fmt.Errorf("pod sandbox name %q is reserved by sandbox %s, which is not ready: %w", name, holder.rec.ID, errdefs.ErrAlreadyExists)
	}
}

// create runs the steps of RunPodSandbox with sb.mu held. On any failure it
// undoes everything done so far; what cannot be undone leaves the sandbox
// NOTREADY in the store, to be retried by stop and remove.
func (m *Manager) create(ctx context.Context, sb *Sandbox, rt *ociruntime.Runtime) (err error) {
	rec := &sb.rec
	cfg := sb.config
	log := m.logger(rec, cfg)
	timer := phase.Start()
	nsOpts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	hostNet := nsOpts.GetNetwork() == runtimeapi.NamespaceMode_NODE
	dir := m.dir(rec.ID)
	if !hostNet {
		rec.NetnsPath = filepath.Join(m.opts.NetnsDir, rec.ID)
	}
	if nsOpts.GetIpc() != runtimeapi.NamespaceMode_NODE {
		rec.ShmPath = filepath.Join(dir, "shm")
	}
	parent := cfg.GetLinux().GetCgroupParent()
	if parent == "" {
		parent = m.opts.CgroupParent
	}
	rec.CgroupsPath, err = oci.CgroupsPath(m.opts.CgroupDriver, parent, rec.ID)
	if err != nil {
		m.unindex(sb)
		return fmt.Errorf("sandbox %s: %v: %w", rec.ID, err, errdefs.ErrInvalidArgument)
	}
	rec.BootID = m.bootID

	// 1. The record goes to disk before anything it owns exists, so a
	// crash at any later point leaves something recovery can undo.
	if err := m.opts.Store.Create(store.Sandboxes, store.SandboxNames, rec.ID, rec.Name, rec); err != nil {
		m.unindex(sb)
		return fmt.Errorf("sandbox %s: reserve name %q: %w", rec.ID, rec.Name, err)
	}
	sb.setView()
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

	// The runtime and the CNI plugins are never killed half-way: a runc or
	// bridge plugin killed mid-setup leaves state nobody records and
	// orphans nobody reaps. They run to the end on opCtx; a cancelled
	// request is noticed between steps and undone.
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stepTimeout)
	defer cancel()
	cancelled := func() error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("request ended: %w", err)
		}
		return nil
	}

	// 2. Directories: the sandbox's own and the pod log directory.
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("make sandbox dir: %w", err)
	}
	if logDir := cfg.GetLogDirectory(); logDir != "" {
		if _, serr := os.Stat(logDir); errors.Is(serr, os.ErrNotExist) {
			if err := os.MkdirAll(logDir, 0o755); err != nil {
				return fmt.Errorf("make log directory: %w", err)
			}
			rec.LogDirCreated = true
		}
	}

	// 3. resolv.conf, hostname, hosts and the pod's /dev/shm.
	if err := writeSandboxFiles(dir, cfg, m.opts.HostResolvConf); err != nil {
		return fmt.Errorf("sandbox files: %w", err)
	}
	if rec.ShmPath != "" {
		if err := mountShm(rec.ShmPath, m.opts.ShmSize); err != nil {
			return err
		}
	}
	timer.Mark("files")

	// 4. Network namespace, pinned. A pod with its own user namespace
	// gets the one its infra creates (owned by that user namespace, so
	// its containers can join it), pinned once the infra runs.
	if err := cancelled(); err != nil {
		return err
	}
	_, _, ownUserns := oci.PodIDMappings(cfg)
	if !hostNet && !ownUserns {
		p, err := m.opts.Network.CreateNetns(rec.ID)
		if err != nil {
			return fmt.Errorf("create network namespace: %w", err)
		}
		if p != rec.NetnsPath {
			rec.NetnsPath = p
		}
		timer.Mark("netns")
	}

	// 5 and 6 run at once: the CNI plugins and the OCI runtime each take
	// tens of milliseconds and neither needs the other, only the pinned
	// namespace both use. With a user namespace, CNI waits for the infra.
	type addResult struct {
		res network.Result
		err error
	}
	var addDone chan addResult
	setup := func() {
		rec.NetworkAttached = true
		addDone = make(chan addResult, 1)
		att := m.attachment(rec, cfg)
		go func() {
			start := time.Now()
			res, err := m.opts.Network.Setup(opCtx, att)
			log.Debug("cni add done", "duration", time.Since(start))
			addDone <- addResult{res, err}
		}()
	}
	if !hostNet && !ownUserns {
		setup()
	}
	infraNetns := rec.NetnsPath
	if ownUserns {
		infraNetns = "" // a new one, created by the runtime in the pod's user namespace
	}
	infraErr := m.startInfra(opCtx, sb, rt, dir, infraNetns)
	timer.Mark("infra")
	if !hostNet && ownUserns && infraErr == nil {
		p, err := m.opts.Network.PinNetns(rec.ID, rec.InfraPID)
		if err != nil {
			return fmt.Errorf("pin network namespace: %w", err)
		}
		rec.NetnsPath = p
		setup()
	}
	if addDone != nil {
		r := <-addDone
		timer.Mark("network")
		if r.err != nil {
			return errors.Join(fmt.Errorf("setup network: %w", r.err), infraErr)
		}
		rec.IPs = r.res.IPs
	}
	if infraErr != nil {
		return infraErr
	}
	if err := cancelled(); err != nil {
		return err
	}
	select {
	case <-sb.infra.exited:
		return fmt.Errorf("infra process %d exited during start", rec.InfraPID)
	default:
	}

	// 7. READY, persisted.
	rec.State = StateReady
	if err := m.persistLocked(sb); err != nil {
		rec.State = StateCreating
		return err
	}
	timer.Mark("ready")
	log.Debug("sandbox ready", timer.Attrs()...)
	m.emit(rec.ID, EventCreated)
	m.emit(rec.ID, EventStarted)
	return nil
}

// startInfra writes the infra container's bundle and starts it through the
// handler's runtime, then watches its process.
func (m *Manager) startInfra(ctx context.Context, sb *Sandbox, rt *ociruntime.Runtime, dir, netnsPath string) error {
	rec := &sb.rec
	spec := oci.InfraSpec(sb.config, oci.SandboxSpec{
		ID: rec.ID, Handler: rec.Handler, RootfsPath: m.rootfs, NetnsPath: netnsPath,
		ShmPath: rec.ShmPath, CgroupsPath: rec.CgroupsPath, OOMScoreAdj: m.oomScoreAdj,
	})
	bundle := filepath.Join(dir, "bundle")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return fmt.Errorf("infra bundle: %w", err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("infra spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("infra spec: %w", err)
	}
	rec.InfraCreated = true
	pid, err := rt.Run(ctx, rec.ID, bundle, filepath.Join(dir, "infra.log"))
	if err != nil {
		return fmt.Errorf("start infra with handler %s: %w", rec.Handler, err)
	}
	rec.InfraPID = pid
	start, err := processStart(pid)
	if err != nil {
		return fmt.Errorf("infra process %d: %w", pid, err)
	}
	rec.InfraStart = start
	p, err := m.watcher.watch(pid, func() { m.infraExited(sb) })
	if err != nil {
		return fmt.Errorf("infra process %d: %w", pid, err)
	}
	sb.infra = p
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
	m.emit(sb.rec.ID, EventStopped)
}
