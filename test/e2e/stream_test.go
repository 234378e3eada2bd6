package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	streamhttp "k8s.io/streaming/pkg/httpstream"
	utilexec "k8s.io/utils/exec"
)

// The transports kubectl and crictl speak, through their own libraries.
var transports = []string{"spdy", "websocket"}

func executor(t *testing.T, transport, rawURL string) remotecommand.Executor {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	var ex remotecommand.Executor
	if transport == "spdy" {
		ex, err = remotecommand.NewSPDYExecutor(&rest.Config{}, "POST", u)
	} else {
		// The runtime's server speaks the kubelet's websocket protocols
		// (up to v4); v5 is what the API server adds in front of it.
		ex, err = remotecommand.NewWebSocketExecutorForProtocols(&rest.Config{}, "GET", u.String(), "v4.channel.k8s.io")
	}
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

// execStream runs cmd through the Exec URL and returns its output and
// exit code.
func (e *env) execStream(t *testing.T, transport, id string, cmd []string, stdin io.Reader, tty bool, sizes remotecommand.TerminalSizeQueue) (string, string, int) {
	t.Helper()
	resp, err := e.rt.Exec(e.ctx(), &runtimeapi.ExecRequest{ContainerId: id, Cmd: cmd, Stdin: stdin != nil, Stdout: true, Stderr: !tty, Tty: tty})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	var out, errOut bytes.Buffer
	opts := remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Tty: tty, TerminalSizeQueue: sizes}
	if !tty {
		opts.Stderr = &errOut
	}
	err = executor(t, transport, resp.Url).StreamWithContext(e.ctx(), opts)
	code := 0
	var exitErr utilexec.ExitError
	if errors.As(err, &exitErr) {
		code = exitErr.ExitStatus()
	} else if err != nil {
		t.Fatalf("exec %v over %s: %v", cmd, transport, err)
	}
	return out.String(), errOut.String(), code
}

type fixedSize struct {
	once sync.Once
	size remotecommand.TerminalSize
}

func (f *fixedSize) Next() *remotecommand.TerminalSize {
	var s *remotecommand.TerminalSize
	f.once.Do(func() { s = &f.size })
	if s == nil {
		select {} // no more resizes; the executor stops calling at the end
	}
	return s
}

func TestExecAttachPortForward(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("stream")
	podID := e.runPod(pod, "")
	web := e.run(podID, pod, ctrConfig("web", "sh", "-c", "mkdir -p /www && echo page-in-pod > /www/index.html && exec httpd -f -p 8080 -h /www"))
	echo := ctrConfig("echo", "sh", "-c", "echo ready; while read l; do echo \"got $l\"; done")
	echo.Stdin = true
	echoID := e.run(podID, pod, echo)

	for _, tr := range transports {
		t.Run("exec/"+tr, func(t *testing.T) {
			out, _, code := e.execStream(t, tr, web, []string{"sh", "-c", "echo $$; exit 3"}, nil, false, nil)
			if code != 3 || strings.TrimSpace(out) == "" {
				t.Errorf("exit %d, output %q; want 3 and a PID", code, out)
			}
			// The end of stdin: websocket protocols before v5 cannot say it.
			in, want := "from stdin", "from stdin"
			cmd := "cat; echo oops >&2"
			if tr == "websocket" {
				cmd, want = "head -c 10; echo oops >&2", "from stdin"
			}
			out, errOut, code := e.execStream(t, tr, web, []string{"sh", "-c", cmd}, strings.NewReader(in), false, nil)
			if out != want || errOut != "oops\n" || code != 0 {
				t.Errorf("stdin round trip: out %q err %q code %d", out, errOut, code)
			}
			// The first size reaches the terminal just after the process
			// starts, as with every runtime: the process polls for it.
			waitSize := `test -t 0 && for i in $(seq 100); do s=$(stty size); [ "$s" = "45 123" ] && break; sleep 0.05; done; echo "$s"`
			out, _, code = e.execStream(t, tr, web, []string{"sh", "-c", waitSize}, strings.NewReader(""), true,
				&fixedSize{size: remotecommand.TerminalSize{Width: 123, Height: 45}})
			if code != 0 || !strings.Contains(out, "45 123") {
				t.Errorf("tty exec: %q exit %d; want a terminal of 45 rows, 123 columns", out, code)
			}
		})
		t.Run("attach/"+tr, func(t *testing.T) {
			resp, err := e.rt.Attach(e.ctx(), &runtimeapi.AttachRequest{ContainerId: echoID, Stdin: true, Stdout: true, Stderr: true})
			if err != nil {
				t.Fatal(err)
			}
			// A second client attached at the same time sees the output too.
			resp2, err := e.rt.Attach(e.ctx(), &runtimeapi.AttachRequest{ContainerId: echoID, Stdout: true, Stderr: true})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(e.ctx(), 10*time.Second)
			defer cancel()
			watcher := &syncBuffer{}
			go func() {
				_ = executor(t, tr, resp2.Url).StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: watcher, Stderr: io.Discard})
			}()
			pr, pw := io.Pipe()
			got := &syncBuffer{}
			done := make(chan error, 1)
			go func() {
				done <- executor(t, tr, resp.Url).StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: pr, Stdout: got, Stderr: io.Discard})
			}()
			// The second client is attached once it sees the echo of a
			// line sent through the first: send numbered lines until so.
			synced := false
			for i := 0; !synced; i++ {
				if i == 20 {
					t.Fatalf("the second client saw none of 20 lines: %q (first client %q)", watcher.String(), got.String())
				}
				fmt.Fprintf(pw, "sync-%d\n", i)
				synced = pollUntil(500*time.Millisecond, func() bool { return strings.Contains(watcher.String(), fmt.Sprintf("got sync-%d\n", i)) })
			}
			ping := "got ping-" + tr + "\n"
			fmt.Fprint(pw, "ping-"+tr+"\n")
			if !pollUntil(5*time.Second, func() bool {
				return strings.HasSuffix(got.String(), ping) && strings.HasSuffix(watcher.String(), ping)
			}) {
				t.Fatalf("attached output %q, second client %q", got.String(), watcher.String())
			}
			cancel() // detach both
			<-done
			// Exactly the container's output, line by line: nothing of
			// the framing.
			for _, out := range []string{got.String(), watcher.String()} {
				for _, l := range strings.SplitAfter(strings.TrimSuffix(out, ping), "\n") {
					if l != "" && (!strings.HasPrefix(l, "got sync-") || !strings.HasSuffix(l, "\n")) {
						t.Errorf("attached client got %q: %q is not an echoed line", out, l)
					}
				}
			}
			st, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: echoID})
			if err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Errorf("container after detach: %v, %v", st, err)
			}
		})
	}
	// Attach to a terminal: the client's size reaches the container's tty.
	ttyCfg := ctrConfig("shell", "sh")
	ttyCfg.Tty, ttyCfg.Stdin = true, true
	shell := e.run(podID, pod, ttyCfg)
	t.Run("attach/tty", func(t *testing.T) {
		resp, err := e.rt.Attach(e.ctx(), &runtimeapi.AttachRequest{ContainerId: shell, Stdin: true, Stdout: true, Tty: true})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(e.ctx(), 10*time.Second)
		defer cancel()
		pr, pw := io.Pipe()
		got := &syncBuffer{}
		done := make(chan error, 1)
		go func() {
			done <- executor(t, "spdy", resp.Url).StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: pr, Stdout: got, Tty: true,
				TerminalSizeQueue: &fixedSize{size: remotecommand.TerminalSize{Width: 100, Height: 30}}})
		}()
		// The size reaches the terminal a moment after the attach: ask
		// until the answer is the client's size.
		sized := false
		for i := 0; !sized; i++ {
			if i == 20 {
				t.Fatalf("attached terminal output %q, want the size 30 100", got.String())
			}
			fmt.Fprint(pw, "stty size\n")
			sized = pollUntil(500*time.Millisecond, func() bool { return strings.Contains(got.String(), "30 100") })
		}
		cancel()
		<-done
	})

	// Several ports and connections at once.
	second := e.run(podID, pod, ctrConfig("web2", "sh", "-c", "mkdir -p /www && echo second > /www/index.html && exec httpd -f -p 8081 -h /www"))
	// Its server listens a moment after the container started.
	if !pollUntil(10*time.Second, func() bool {
		return e.exec(second, 10, "wget", "-q", "-O", "-", "http://127.0.0.1:8081/").ExitCode == 0
	}) {
		t.Fatal("the second web server does not answer after 10s")
	}
	t.Run("portforward/concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan string, 20)
		for i := 0; i < 10; i++ {
			for port, want := range map[int]string{8080: "page-in-pod\n", 8081: "second\n"} {
				wg.Add(1)
				go func(port int, want string) {
					defer wg.Done()
					if got := e.forwardGet(t, "spdy", podID, port); got != want {
						errs <- fmt.Sprintf("port %d: %q", port, got)
					}
				}(port, want)
			}
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	})

	// Port-forward over SPDY, as kubectl's requests reach the runtime: the
	// websocket form of port-forward exists only between kubectl and the
	// API server, which tunnels it to the runtime's SPDY endpoint.
	t.Run("portforward", func(t *testing.T) {
		page := e.forwardGet(t, "spdy", podID, 8080)
		if page != "page-in-pod\n" {
			t.Errorf("page through port-forward = %q", page)
		}
	})

	t.Run("portforward/no-listener", func(t *testing.T) {
		done := make(chan string, 1)
		go func() { done <- e.forwardGet(t, "spdy", podID, 9999) }()
		select {
		case page := <-done:
			if page != "" {
				t.Errorf("got %q from a port nothing listens on", page)
			}
		case <-time.After(15 * time.Second):
			t.Error("port-forward to a closed port hangs")
		}
	})

	t.Run("exec/50-concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		failed := 0
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				out, _, code := e.execStream(t, transports[i%2], web, []string{"echo", fmt.Sprint(i)}, nil, false, nil)
				if code != 0 || out != fmt.Sprintf("%d\n", i) {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
		if failed > 0 {
			t.Errorf("%d of 50 concurrent execs failed", failed)
		}
	})

	t.Run("bad-targets", func(t *testing.T) {
		if _, err := e.rt.Exec(e.ctx(), &runtimeapi.ExecRequest{ContainerId: "nosuch", Cmd: []string{"true"}, Stdout: true}); status.Code(err) != codes.NotFound {
			t.Errorf("exec into an unknown container: %v", err)
		}
		done := e.run(podID, pod, ctrConfig("done", "true"))
		e.waitExited(done, 10*time.Second)
		if _, err := e.rt.Exec(e.ctx(), &runtimeapi.ExecRequest{ContainerId: done, Cmd: []string{"true"}, Stdout: true}); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("exec into an exited container: %v", err)
		}
	})

	// A forwarded connection ends when the pod stops, instead of hanging.
	e.run(podID, pod, ctrConfig("holder", "sh", "-c", "while true; do nc -l -p 9000 -e /bin/cat; done"))
	// nc listens a moment after the container started: retry until the
	// forwarded connection echoes.
	var conn net.Conn
	for i := 0; ; i++ {
		c, stopForward := e.forwardConn(t, podID, 9000)
		echoed := make([]byte, 6)
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, werr := c.Write([]byte("hello\n"))
		_, rerr := io.ReadFull(c, echoed)
		if werr == nil && rerr == nil && string(echoed) == "hello\n" {
			conn = c
			defer stopForward()
			break
		}
		stopForward()
		if i == 20 {
			t.Fatalf("echo through the forwarded connection: %q, %v, %v", echoed, werr, rerr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := e.rt.StopPodSandbox(e.ctx(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Errorf("forwarded connection after the pod stopped: %v, want EOF", err)
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID)

	// Every session logged its start and, by now, its end.
	for _, kind := range []string{"exec", "attach", "portforward"} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			started, ended := len(e.logBuf.lines("stream session started", "kind="+kind)), len(e.logBuf.lines("stream session ended", "kind="+kind))
			if started > 0 && started == ended {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s sessions: %d started, %d ended", kind, started, ended)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// forwardConn opens a connection through a port-forward to port in the pod.
func (e *env) forwardConn(t *testing.T, podID string, port int) (net.Conn, func()) {
	resp, err := e.rt.PortForward(e.ctx(), &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{int32(port)}})
	if err != nil {
		t.Fatalf("PortForward: %v", err)
	}
	u, _ := url.Parse(resp.Url)
	rt, upgrader, err := spdy.RoundTripperFor(&rest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddressesForStreaming(spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, "POST", u),
		[]string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = pf.ForwardPorts() }()
	<-ready
	ports, _ := pf.GetPorts()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local))
	if err != nil {
		t.Fatal(err)
	}
	return conn, func() { conn.Close(); close(stop) }
}

// forwardGet fetches http://127.0.0.1:<port>/ inside the pod through a
// port-forward; "" when the connection fails.
func (e *env) forwardGet(t *testing.T, transport, podID string, port int) string {
	t.Helper()
	page, err := e.forwardWith(transport, podID, port)
	if err != nil && !errors.Is(err, errNoResponse) {
		t.Fatal(err)
	}
	return page
}

// forward is forwardGet over SPDY for use from any goroutine: it returns
// every failure as an error.
func (e *env) forward(podID string, port int) (string, error) {
	return e.forwardWith("spdy", podID, port)
}

// errNoResponse is a forwarded connection that gave no HTTP response (as
// when nothing listens on the port in the pod).
var errNoResponse = errors.New("no response through the port-forward")

func (e *env) forwardWith(transport, podID string, port int) (string, error) {
	resp, err := e.rt.PortForward(e.ctx(), &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{int32(port)}})
	if err != nil {
		return "", fmt.Errorf("PortForward: %w", err)
	}
	u, _ := url.Parse(resp.Url)
	var dialer streamhttp.Dialer
	if transport == "spdy" {
		rt, upgrader, err := spdy.RoundTripperFor(&rest.Config{})
		if err != nil {
			return "", err
		}
		dialer = spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: rt}, "POST", u)
	} else {
		dialer, err = portforward.NewSPDYOverWebsocketDialerForStreaming(u, &rest.Config{})
		if err != nil {
			return "", err
		}
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	defer close(stop)
	pf, err := portforward.NewOnAddressesForStreaming(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return "", err
	}
	failed := make(chan error, 1)
	go func() { failed <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-failed:
		return "", fmt.Errorf("port-forward: %w", err)
	case <-time.After(10 * time.Second):
		return "", errors.New("port-forward not ready after 10s")
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		return "", fmt.Errorf("forwarded ports %v, %v", ports, err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	r, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", ports[0].Local))
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNoResponse, err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	return string(b), err
}

// The streaming server over TLS, and its URLs single-use.
func TestStreamingTLSAndSingleUseURLs(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "husk-stream"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)

	e := containerEnvWith(t, withConfig(fmt.Sprintf("[stream]\ntls_cert = %q\ntls_key = %q\n", certFile, keyFile)))
	pod := e.podConfig("tls")
	podID := e.runPod(pod, "")
	id := e.run(podID, pod, ctrConfig("c", "sleep", "3600"))
	resp, err := e.rt.Exec(e.ctx(), &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"echo", "over-tls"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.Url, "https://127.0.0.1:") {
		t.Fatalf("exec URL %s, want https on 127.0.0.1", resp.Url)
	}
	u, _ := url.Parse(resp.Url)
	cfg := &rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}}
	ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", u)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := ex.StreamWithContext(e.ctx(), remotecommand.StreamOptions{Stdout: &out}); err != nil || out.String() != "over-tls\n" {
		t.Fatalf("exec over TLS: %q, %v", out.String(), err)
	}
	// The same URL a second time: the token was used up.
	ex2, _ := remotecommand.NewSPDYExecutor(cfg, "POST", u)
	if err := ex2.StreamWithContext(e.ctx(), remotecommand.StreamOptions{Stdout: io.Discard}); err == nil {
		t.Error("an exec URL worked twice")
	}
	e.stopRemove(podID)
	e.assertNoLeaks(podID)
}
