package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// How streaming sessions end: the client's end of stdin ends an attach
// (issue 11, item 1), and a half-closed forwarded connection still gets
// its reply (item 2). Both as containerd does.
func TestStreamEnds(t *testing.T) {
	t.Parallel()
	e := containerEnv(t)
	pod := e.podConfig("ends")
	podID := e.runPod(pod, "")

	shell := ctrConfig("shell", "sh")
	shell.Stdin = true
	shellID := e.run(podID, pod, shell)
	once := ctrConfig("once", "sh")
	once.Stdin, once.StdinOnce = true, true
	onceID := e.run(podID, pod, once)
	// One server answers once it read the request to its end, the other
	// (httpd) after the request's headers.
	e.run(podID, pod, ctrConfig("eof", "nc", "-ll", "-p", "9100", "-e", "sh", "-c", `req=$(cat); echo "read: $req"`))
	e.run(podID, pod, ctrConfig("web", "sh", "-c", "mkdir -p /www && echo page > /www/index.html && exec httpd -f -p 8080 -h /www"))

	t.Run("attach/stdin-end", func(t *testing.T) {
		// `(sleep 1; echo 'echo hi'; sleep 1) | crictl attach -i`: the
		// session ends soon after stdin does; the container runs on, its
		// stdin open for the next client.
		for _, word := range []string{"hi", "again"} {
			out, took, err := e.attachLines(shellID, "echo "+word+"\n", word)
			if err != nil {
				t.Fatalf("attach sending %q: %v (output %q)", word, err, out)
			}
			t.Logf("attach ended %s after its stdin", took.Round(time.Millisecond))
			if st := e.containerState(shellID); st != runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Fatalf("container after its attach ended: %s, want RUNNING", st)
			}
		}
	})

	t.Run("attach/stdin-once", func(t *testing.T) {
		// stdin_once: the end of the client's stdin closes the
		// container's, its shell exits, and the session ends with it.
		out, took, err := e.attachLines(onceID, "echo bye\n", "bye")
		if err != nil {
			t.Fatalf("attach: %v (output %q)", err, out)
		}
		t.Logf("stdin_once attach ended %s after its stdin", took.Round(time.Millisecond))
		if st := e.waitExited(onceID, 10*time.Second); st.ExitCode != 0 {
			t.Errorf("stdin_once container exited %d, want 0 (its shell read the end of stdin)", st.ExitCode)
		}
	})

	t.Run("portforward/half-close", func(t *testing.T) {
		for _, tt := range []struct {
			port int
			want string
		}{
			{9100, "read: GET / HTTP/1.0"},
			{8080, "200 OK"},
		} {
			// The servers listen a moment after their containers start.
			var got string
			for i := 0; i < 50; i++ {
				if got = e.halfClosedRequest(t, podID, tt.port); strings.Contains(got, tt.want) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if !strings.Contains(got, tt.want) {
				t.Errorf("port %d: reply to a request followed by shutdown(SHUT_WR): %q, want %q", tt.port, got, tt.want)
			}
		}
	})

	e.stopRemove(podID)
	e.assertNoLeaks(podID)
}

// attachLines attaches to id over SPDY, sends input once the session is
// up, waits for want in the output, then ends stdin. It returns the output
// and how long the session lasted after stdin ended; a session still
// open 15s later is an error.
func (e *env) attachLines(id, input, want string) (string, time.Duration, error) {
	resp, err := e.rt.Attach(e.ctx(), &runtimeapi.AttachRequest{ContainerId: id, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		return "", 0, err
	}
	ctx, cancel := context.WithTimeout(e.ctx(), 30*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- executor(e.t, "spdy", resp.Url).StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: pr, Stdout: out, Stderr: out})
	}()
	// The monitor tees output only to clients attached when it comes:
	// send until the answer shows that this one is.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			return out.String(), 0, fmt.Errorf("no %q in the output", want)
		}
		if _, err := io.WriteString(pw, input); err != nil {
			return out.String(), 0, err
		}
		time.Sleep(200 * time.Millisecond)
	}
	pw.Close()
	closed := time.Now()
	select {
	case err := <-done:
		return out.String(), time.Since(closed), err
	case <-time.After(15 * time.Second):
		cancel()
		<-done
		return out.String(), time.Since(closed), fmt.Errorf("session still open 15s after stdin ended")
	}
}

func (e *env) containerState(id string) runtimeapi.ContainerState {
	e.t.Helper()
	resp, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		e.t.Fatalf("ContainerStatus %s: %v", id, err)
	}
	return resp.Status.State
}

// halfClosedRequest sends an HTTP/1.0 request through a port-forward, as
// kubectl forwards it, then shuts its sending side down and reads the
// reply to its end.
func (e *env) halfClosedRequest(t *testing.T, podID string, port int) string {
	conn, stop := e.forwardConn(t, podID, port)
	defer stop()
	if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return ""
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, _ := io.ReadAll(conn)
	return string(b)
}
