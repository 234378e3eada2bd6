package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"

	"github.com/huskrt/husk/internal/network"
)

// delFloor is the floor of StopPodSandbox on the [bridge] network: the CNI
// DEL of one pod's network, bridge and host-local as huskd runs them for a
// pod without host ports (portmap has nothing to undo then and is not
// run), on a bridge and /24 of its own. Every runtime's StopPodSandbox runs
// this DEL; most of it is the kernel deleting the pod's veth, which waits
// for an RCU barrier. Its pods' network namespaces are made and their ADD
// run untimed, after the paired RunPodSandbox rounds.
type delFloor struct {
	dir    string
	bridge string
	cni    *libcni.CNIConfig
	list   *libcni.NetworkConfigList
	pins   *network.Manager // pins the pods' namespaces as huskd does
	netns  []string         // the pins of the pods' network namespaces
	undone int              // pods from here on have not had their DEL
}

// delFloorSide names the floor's lane in the paired rounds.
const delFloorSide = "floor"

func newDelFloor() (*delFloor, error) {
	dir, err := os.MkdirTemp("", "hbench-delfloor-")
	if err != nil {
		return nil, err
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(250))
	f := &delFloor{dir: dir, bridge: fmt.Sprintf("hb%s-dfl", runTag)}
	f.list, err = libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "bench-delfloor", "plugins": [
 {"type": "bridge", "bridge": %q, "isGateway": true,
  "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "10.199.%d.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}`,
		f.bridge, filepath.Join(dir, "ipam"), n.Int64()+1)))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	f.cni = libcni.NewCNIConfigWithCacheDir([]string{"/usr/lib/cni", "/opt/cni/bin"}, filepath.Join(dir, "cache"), nil)
	f.pins, err = network.New(network.Options{NetnsDir: filepath.Join(dir, "netns"), CacheDir: filepath.Join(dir, "cache")})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return f, nil
}

func (f *delFloor) conf(i int) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("delfloor%s%d", runTag, i), NetNS: f.netns[i], IfName: "eth0"}
}

// add makes pod i's network namespace, pinned in the floor's dir by
// huskd's own code, and runs its ADD. Not with `ip netns add`: the first
// one of a boot bind-mounts /run/netns onto itself, and a namespace a
// runtime had pinned there (containerd's pods) is then held by the hidden
// mount, so that the runtime's StopPodSandbox fails to remove it (EBUSY).
func (f *delFloor) add(ctx context.Context, i int) error {
	pin, err := f.pins.CreateNetns(fmt.Sprintf("pod-%d", i))
	if err != nil {
		return err
	}
	f.netns = append(f.netns, pin)
	if _, err := f.cni.AddNetworkList(ctx, f.list, f.conf(i)); err != nil {
		return fmt.Errorf("CNI ADD %s: %w", pin, err)
	}
	return nil
}

// del is the timed part: pod i's DEL.
func (f *delFloor) del(ctx context.Context, i int) error {
	if err := f.cni.DelNetworkList(ctx, f.list, f.conf(i)); err != nil {
		return fmt.Errorf("CNI DEL %s: %w", f.netns[i], err)
	}
	f.undone = i + 1
	return nil
}

// close deletes what is left: the namespaces, the bridge, the dir.
func (f *delFloor) close() {
	for i := range f.netns {
		if i >= f.undone {
			_ = f.cni.DelNetworkList(context.Background(), f.list, f.conf(i))
		}
		_ = f.pins.RemoveNetns(f.netns[i])
	}
	_ = exec.Command("ip", "link", "del", f.bridge).Run()
	_ = os.RemoveAll(f.dir)
}
