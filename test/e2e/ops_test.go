package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// jsonLog parses every line of huskd's log as a JSON object: with
// log_format = "json" no line may be anything else.
func (e *env) jsonLog(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(e.logs()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %q", err, sc.Text())
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("log line without %q: %q", k, sc.Text())
			}
		}
		out = append(out, m)
	}
	return out
}

// logged returns the JSON log lines whose attributes include all of want.
func (e *env) logged(t *testing.T, want map[string]any) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range e.jsonLog(t) {
		ok := true
		for k, v := range want {
			ok = ok && fmt.Sprint(l[k]) == fmt.Sprint(v)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// waitLogged polls the log for a line with want's attributes.
func (e *env) waitLogged(t *testing.T, want map[string]any) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if l := e.logged(t, want); len(l) > 0 {
			return l[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %v:\n%s", want, e.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v\n%s", url, resp.StatusCode, err, b)
	}
	return b
}

// scrape reads Prometheus' text format: series (name{labels}, as
// client_golang prints them, labels sorted) to value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, l := range strings.Split(string(httpGet(t, "http://"+addr+"/metrics")), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

// Under systemd (Type=notify) huskd says READY=1 once its socket serves and
// STOPPING=1 when it stops. NOTIFY_SOCKET reaches none of its children: the
// runtime (through a wrapper that records its environment) never sees it,
// or it would hand a notify socket to the containers.
func TestSystemdNotify(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "hnotify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	receive := func(want string) {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("notify socket: got %q, %v; want %q", buf[:n], err, want)
		}
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "runc-env")
	writeScript(t, wrapper, fmt.Sprintf("env > %q.$$\nexec %q \"$@\"\n", filepath.Join(dir, "env"), runc))
	e := containerEnvWith(t, withDaemonEnv("NOTIFY_SOCKET="+sock), withConfig(fmt.Sprintf("[runtimes.runc]\npath = %q\n", wrapper)))
	receive("READY=1")
	if _, err := e.rt.Version(e.ctx(), &runtimeapi.VersionRequest{}); err != nil {
		t.Fatalf("READY=1 but Version: %v", err)
	}
	pod := e.podConfig("notify")
	podID := e.runPod(pod, "runc")
	e.run(podID, pod, ctrConfig("app", "sleep", "3600"))
	dumps, _ := filepath.Glob(filepath.Join(dir, "env.*"))
	if len(dumps) < 2 {
		t.Fatalf("the runtime wrapper ran %d times, want the infra's run and the container's at least", len(dumps))
	}
	for _, d := range dumps {
		if b, _ := os.ReadFile(d); bytes.Contains(b, []byte("NOTIFY_SOCKET")) {
			t.Errorf("the runtime saw NOTIFY_SOCKET:\n%s", b)
		}
	}
	if len(e.lines("metrics serving")) > 0 || len(e.lines("pprof serving")) > 0 {
		t.Errorf("metrics or pprof serve without their keys:\n%s", e.logs())
	}
	e.stopRemove(podID)
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	receive("STOPPING=1")
}

func (e *env) lines(subs ...string) []string { return e.logBuf.lines(subs...) }

// huskd check reads the node against the config: this machine has what husk
// needs (exit 0); a config naming a missing runtime and an empty plugin
// dir gets MISSING with what to do, and exit 1.
func TestHuskdCheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	huskd := filepath.Join(binDir, "huskd")
	out, err := exec.Command(huskd, "check", "--config", e.configPath).CombinedOutput()
	if err != nil {
		t.Fatalf("huskd check on this machine: %v\n%s", err, out)
	}
	for _, area := range []string{"husk-pause", "husk-monitor", "runtime runc", "runtime crun", "CNI config", "CNI plugins",
		"cgroups", "cgroup driver", "overlayfs", "idmapped mounts", "pidfd", "iptables", "AppArmor", "SELinux", "seccomp"} {
		if !bytes.Contains(out, []byte(" "+area+" ")) {
			t.Errorf("huskd check does not report %s:\n%s", area, out)
		}
	}
	for _, want := range []string{"ok       runtime runc", "the default handler", "features: seccomp", "ok       idmapped mounts", "0 missing"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("huskd check lacks %q:\n%s", want, out)
		}
	}

	bad := filepath.Join(e.dir, "bad.toml")
	empty := filepath.Join(e.dir, "no-plugins")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("default_runtime = \"ghost\"\n[runtimes.ghost]\npath = \"/nonexistent/ghost-runtime\"\n[cni]\nconf_dir = %q\nbin_dirs = [%q]\n", e.confDir, empty)
	if err := os.WriteFile(bad, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(huskd, "check", "--config", bad).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("huskd check with a missing runtime: %v, want exit 1\n%s", err, out)
	}
	for _, want := range []string{"MISSING  runtime ghost", "/nonexistent/ghost-runtime not found, the default handler",
		"MISSING  CNI plugins", "fix: install them", "2 missing", "huskd: check: 2 thing(s) husk needs are missing"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("huskd check lacks %q:\n%s", want, out)
		}
	}
}

// No credential reaches huskd's log, at debug level, whether the pull
// succeeds or is refused, and whether it comes with the request or from
// the config; nor does verbose Status show the configured ones.
func TestNoCredentialInLogs(t *testing.T) {
	t.Parallel()
	const (
		user, password = "puller", "pw-7f3a-secret"
		cfgUser, cfgPw = "cfguser", "cfgpw-91c2-secret"
		identityToken  = "idtok-5d1e-secret"
		registryToken  = "regtok-c40b-secret"
	)
	valid := map[string]bool{
		"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password)): true,
		"Basic " + base64.StdEncoding.EncodeToString([]byte(cfgUser+":"+cfgPw)): true,
		"Bearer " + registryToken: true,
	}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !valid[r.Header.Get("Authorization")] {
			w.Header().Set("WWW-Authenticate", `Basic realm="e2e"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	img, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.NewTag(host+"/library/private:1", name.Insecure)
	if err := remote.Write(ref, img, remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: user, Password: password}))); err != nil {
		t.Fatal(err)
	}
	// Requests to private.example go to the registry with the configured
	// credentials; everything else goes there with the request's.
	e := newEnv(t, withConfig(fmt.Sprintf(`[registries."*"]
endpoints = ["http://%s"]
skip_upstream = true
[registries."private.example"]
endpoints = ["http://%s"]
skip_upstream = true
username = %q
password = %q
`, host, host, cfgUser, cfgPw)))
	e.start()
	images := runtimeapi.NewImageServiceClient(e.conn)
	secrets := []string{password, cfgPw, identityToken, registryToken,
		base64.StdEncoding.EncodeToString([]byte(user + ":" + password)),
		base64.StdEncoding.EncodeToString([]byte(user + ":wrong-secret")), "wrong-secret"}
	pull := func(image string, auth *runtimeapi.AuthConfig, wantOK bool) {
		t.Helper()
		_, err := images.PullImage(e.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}, Auth: auth})
		if (err == nil) != wantOK {
			t.Errorf("pull %s with %v: %v, want success %v\n%s", image, auth, err, wantOK, e.logs())
		}
		for _, s := range secrets {
			if err != nil && strings.Contains(err.Error(), s) {
				t.Errorf("the error of a pull shows a credential: %v", err)
			}
		}
	}
	pull("library/private:1", &runtimeapi.AuthConfig{Username: user, Password: password}, true)
	pull("library/private:1", &runtimeapi.AuthConfig{Auth: base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}, true)
	pull("library/private:1", &runtimeapi.AuthConfig{RegistryToken: registryToken}, true)
	pull("library/private:1", &runtimeapi.AuthConfig{Username: user, Password: "wrong-secret"}, false)
	pull("library/private:1", &runtimeapi.AuthConfig{Auth: base64.StdEncoding.EncodeToString([]byte(user + ":wrong-secret"))}, false)
	pull("library/private:1", &runtimeapi.AuthConfig{IdentityToken: identityToken}, false)
	pull("private.example/library/private:1", nil, true)

	st, err := e.rt.Status(e.ctx(), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.Info["config"], cfgUser) {
		t.Errorf("verbose Status lacks the registries: %s", st.Info["config"])
	}
	if strings.Contains(st.Info["config"], cfgPw) {
		t.Errorf("verbose Status shows the configured registry password: %s", st.Info["config"])
	}
	if n := len(e.lines("PullImage")); n < 7 {
		t.Errorf("%d PullImage log lines, want 7 at least:\n%s", n, e.logs())
	}
	logs := e.logs()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("huskd's log shows %q:\n%s", s, logs)
		}
	}
}
