package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// pluginDir makes a dir for fake CNI plugins, searched before the
// system's, and sets the CNI timeout; it returns the dir.
func (e *env) pluginDir(cniTimeout string) string {
	e.t.Helper()
	dir, err := os.MkdirTemp("", "he2e-plugins-")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { os.RemoveAll(dir) })
	cfg, err := os.ReadFile(e.configPath)
	if err != nil {
		e.t.Fatal(err)
	}
	s := strings.Replace(string(cfg), `bin_dirs = [`, fmt.Sprintf(`bin_dirs = [%q, `, dir), 1)
	if cniTimeout != "" {
		s = strings.Replace(s, "write_default = false\n", fmt.Sprintf("write_default = false\ntimeout = %q\n", cniTimeout), 1)
	}
	if err := os.WriteFile(e.configPath, []byte(s), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

// assertPIDsGone waits for every PID listed in file (one a line) to be
// gone or a zombie.
func assertPIDsGone(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the plugin wrote no PIDs: %v", err)
	}
	pids := strings.Fields(string(b))
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range pids {
		for alive(atoi(p)) {
			if time.Now().After(deadline) {
				comm, _ := procCommState(atoi(p))
				t.Errorf("plugin process %s (%s) still runs", p, comm)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// hangPlugin is a CNI plugin that hangs in ADD (and in DEL while
// <dir>/hang-del exists): a shell whose child sleeps and holds its
// stdout. Their PIDs go to <dir>/hang.pids.
func hangPlugin(t *testing.T, dir string) {
	t.Helper()
	pids, marker := filepath.Join(dir, "hang.pids"), filepath.Join(dir, "hang-del")
	writeScript(t, filepath.Join(dir, "hang"), fmt.Sprintf(`hang() { echo $$ >> %[1]q; sleep 100000 & echo $! >> %[1]q; wait; }
case "$CNI_COMMAND" in
ADD) hang;;
DEL) [ -e %[2]q ] && hang;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}';;
esac
exit 0
`, pids, marker))
}

// A CNI plugin that hangs: RunPodSandbox fails after [cni] timeout, the
// plugin and its child are killed, and the network the bridge set up
// before it is released. When DEL hangs too, the undo is bounded the same
// way and the sandbox stays NOTREADY, holding what is left, until a stop
// finds DEL working again.
func TestChaosCNIPluginHangs(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	e := newEnv(t, func(en *env) { en.plugins = en.bridgePlugin() + `, {"type": "hang"}` })
	dir := e.pluginDir(timeout.String())
	hangPlugin(t, dir)
	e.start()

	runHung := func(name string) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		start := time.Now()
		_, err := e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: e.podConfig(name)})
		return time.Since(start), err
	}
	took, err := runHung("cnihang")
	if err == nil || !strings.Contains(err.Error(), "[cni] timeout") {
		t.Fatalf("RunPodSandbox with a hung plugin = %v after %s; want the CNI timeout\n%s", err, took, e.logs())
	}
	if took > timeout+15*time.Second {
		t.Errorf("RunPodSandbox returned %s after it started; want about the CNI timeout, %s", took, timeout)
	}
	t.Logf("hung ADD: RunPodSandbox failed after %s: %v", took, err)
	assertPIDsGone(t, filepath.Join(dir, "hang.pids"))
	e.assertNoSandboxes()
	e.assertNoLeaks()

	// ADD and DEL hang.
	if err := os.WriteFile(filepath.Join(dir, "hang-del"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	took, err = runHung("cnihangdel")
	if err == nil || !strings.Contains(err.Error(), "[cni] timeout") {
		t.Fatalf("RunPodSandbox with a plugin hung in ADD and DEL = %v", err)
	}
	if took > 2*timeout+15*time.Second {
		t.Errorf("RunPodSandbox with ADD and DEL hung returned after %s; want about twice the CNI timeout", took)
	}
	assertPIDsGone(t, filepath.Join(dir, "hang.pids"))
	resp, err := e.rt.ListPodSandbox(e.ctx(), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Items) != 1 || resp.Items[0].State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Fatalf("after an undo whose DEL hung: %v; want one NOTREADY sandbox", resp.Items)
	}
	if err := os.Remove(filepath.Join(dir, "hang-del")); err != nil {
		t.Fatal(err)
	}
	e.stopRemove(resp.Items[0].Id)
	e.assertNoSandboxes()
	e.assertNoLeaks(resp.Items[0].Id)
}

// A plugin killed in the middle of ADD, after the bridge set up the veth,
// the IP and the masquerade rules: the failure rolls back, and the next
// RunPodSandbox of the same pod works.
func TestChaosCNIPluginKilledMidAdd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(en *env) {
		en.plugins = strings.Replace(en.bridgePlugin(), `"type": "bridge"`, `"type": "bridgekill"`, 1)
	})
	dir := e.pluginDir("")
	killed, out := filepath.Join(dir, "killed-once"), filepath.Join(dir, "bridge-add.json")
	writeScript(t, filepath.Join(dir, "bridgekill"), fmt.Sprintf(`for d in /usr/lib/cni /opt/cni/bin; do
	if [ -x "$d/bridge" ]; then B="$d/bridge"; break; fi
done
if [ "$CNI_COMMAND" = ADD ] && [ ! -e %[1]q ]; then
	touch %[1]q
	"$B" > %[2]q
	kill -9 $$
fi
exec "$B"
`, killed, out))
	e.start()
	cfg := e.podConfig("cnikilled")
	_, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("RunPodSandbox with the plugin killed = %v; want the kill", err)
	}
	if b, _ := os.ReadFile(out); !strings.Contains(string(b), strings.TrimSuffix(e.subnet.IP.String(), "0")) {
		t.Fatalf("the bridge had not set up the pod before the kill: %q", b)
	}
	e.assertNoSandboxes()
	e.assertNoLeaks()

	id := e.runPod(cfg, "")
	st, _ := e.status(id)
	if st.State != runtimeapi.PodSandboxState_SANDBOX_READY || !e.subnet.Contains(net.ParseIP(st.GetNetwork().GetIp())) {
		t.Errorf("the retried pod: %s, IP %q", st.State, st.GetNetwork().GetIp())
	}
	e.stopRemove(id)
	e.assertNoLeaks(id)
}
