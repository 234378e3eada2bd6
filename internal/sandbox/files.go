package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/huskrt/husk/internal/atomicfile"
	"github.com/huskrt/husk/internal/oci"
	"github.com/huskrt/husk/internal/proc"
)

// writeSandboxFiles writes the files every container of the pod mounts:
// resolv.conf, hostname and hosts, in the sandbox's runtime dir.
func writeSandboxFiles(dir string, cfg *runtimeapi.PodSandboxConfig, hostResolv string) error {
	resolv, err := resolvConf(cfg.GetDnsConfig(), hostResolv)
	if err != nil {
		return err
	}
	hostname := cfg.GetHostname()
	if hostname == "" {
		// Host-network pods without a hostname keep the node's.
		if h, err := os.Hostname(); err == nil {
			hostname = h
		}
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
	for name, content := range map[string][]byte{
		"resolv.conf": resolv,
		"hostname":    []byte(hostname + "\n"),
		"hosts":       []byte(hosts),
	} {
		// No fsync: these live on tmpfs and die with the pod.
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// resolvConf renders the pod's DNS config, or copies the host's when the
// pod has none (the kubelet's "Default" DNS policy sends no DNSConfig).
func resolvConf(dns *runtimeapi.DNSConfig, hostResolv string) ([]byte, error) {
	if dns == nil || (len(dns.GetServers()) == 0 && len(dns.GetSearches()) == 0 && len(dns.GetOptions()) == 0) {
		b, err := os.ReadFile(hostResolv)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read host resolv.conf: %w", err)
		}
		return b, nil
	}
	var buf bytes.Buffer
	if len(dns.GetSearches()) > 0 {
		fmt.Fprintf(&buf, "search %s\n", strings.Join(dns.GetSearches(), " "))
	}
	for _, s := range dns.GetServers() {
		fmt.Fprintf(&buf, "nameserver %s\n", s)
	}
	if len(dns.GetOptions()) > 0 {
		fmt.Fprintf(&buf, "options %s\n", strings.Join(dns.GetOptions(), " "))
	}
	return buf.Bytes(), nil
}

// mountShm mounts the pod's /dev/shm tmpfs at path.
func mountShm(path string, size int64) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return fmt.Errorf("shm dir: %w", err)
	}
	opts := "mode=1777,size=" + strconv.FormatInt(size, 10)
	if err := unix.Mount("shm", path, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return fmt.Errorf("mount shm at %s: %w", path, err)
	}
	return nil
}

// unmountAll detaches every mount stacked at path; a path that is not a
// mount point (or is gone) is fine.
func unmountAll(path string) error {
	for i := 0; i < 16; i++ {
		err := unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		if err == nil {
			continue
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	return fmt.Errorf("unmount %s: still mounted after 16 unmounts", path)
}

// prepareInfraRootfs makes the read-only root every infra container shares:
// only the pause binary and the directories its mounts need. It is rebuilt
// only when the binary changed.
func prepareInfraRootfs(stateDir, pauseBinary string) (string, error) {
	if pauseBinary == "" {
		return "", errors.New("infra rootfs: no pause binary configured")
	}
	src, err := os.Open(pauseBinary)
	if err != nil {
		return "", fmt.Errorf("infra rootfs: pause binary: %w", err)
	}
	defer src.Close()
	rootfs := filepath.Join(stateDir, "infra-rootfs")
	for _, d := range []string{"proc", "dev", "sys", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return "", fmt.Errorf("infra rootfs: %w", err)
		}
	}
	// Every infra sees this root: no half copy a crash left may stay.
	if _, err := atomicfile.RemoveTemps(rootfs); err != nil {
		return "", fmt.Errorf("infra rootfs: %w", err)
	}
	dst := filepath.Join(rootfs, strings.TrimPrefix(oci.InfraPath, "/"))
	if sameFile(src, dst) {
		return rootfs, nil
	}
	// Replacing the old binary is safe for running infra processes: they
	// keep the old inode.
	if err := installFile(dst, src, 0o755); err != nil {
		return "", fmt.Errorf("infra rootfs: install pause: %w", err)
	}
	return rootfs, nil
}

// mountReadOnly bind mounts dir onto itself, read-only: the root a direct
// infra pivots into is this mount (a bind of it in the infra's own mount
// namespace, which a user namespace locks read-only). Its own mount also
// keeps an exec that the filesystem holding the state dir would refuse
// (a noexec /run).
func mountReadOnly(dir string) error {
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		_ = unmountAll(dir)
		return fmt.Errorf("remount %s read-only: %w", dir, err)
	}
	return nil
}

// lastCap is the node's highest capability number.
func lastCap() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("highest capability: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("highest capability: %w", err)
	}
	return n, nil
}

// installFile replaces dst with r's content.
func installFile(dst string, r io.Reader, perm os.FileMode) error {
	f, err := atomicfile.Create(dst, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := io.Copy(f, r); err != nil {
		return err
	}
	return f.Commit()
}

// sameFile reports whether dst already has src's content. It compares a
// block at a time: reading both whole left megabytes of garbage in huskd's
// heap at every start, which the runtime keeps for minutes.
func sameFile(src *os.File, dst string) bool {
	defer src.Seek(0, io.SeekStart)
	d, err := os.Open(dst)
	if err != nil {
		return false
	}
	defer d.Close()
	sa, errA := src.Stat()
	sb, errB := d.Stat()
	if errA != nil || errB != nil || sa.Size() != sb.Size() {
		return false
	}
	var a, b [32 << 10]byte
	for {
		n, errA := io.ReadFull(src, a[:])
		m, errB := io.ReadFull(d, b[:])
		if n != m || !bytes.Equal(a[:n], b[:m]) {
			return false
		}
		if errA == io.EOF || errA == io.ErrUnexpectedEOF {
			return errB == errA
		}
		if errA != nil || errB != nil {
			return false
		}
	}
}

// clampOOMScoreAdj is want, or the lowest value above it this process may
// give its children (proc.ClampOOMScoreAdj), said in the log.
func clampOOMScoreAdj(want int, log *slog.Logger) int {
	got := proc.ClampOOMScoreAdj(want)
	if got != want {
		log.Info("infra oom_score_adj clamped: no CAP_SYS_RESOURCE to lower it", "wanted", want, "using", got)
	}
	return got
}
