package cri

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// A forwarded connection whose one side stops sending still carries the
// other side's data to its end: the half-close is passed on, as kubectl's
// clients and the pod's servers expect (issue 11, item 2).
func TestForwardHalfClose(t *testing.T) {
	tests := []struct {
		name string
		// server plays the pod's side and returns what it read.
		server func(c *net.TCPConn) string
		// client plays kubectl's local client: it sends send, shuts its
		// sending side down after sending (or after reading, when the
		// server speaks first), and reads the reply to its end.
		send, want, serverGot string
		serverFirst           bool
	}{
		{
			name: "server answers after reading the request to its end",
			server: func(c *net.TCPConn) string {
				b, _ := io.ReadAll(c)
				time.Sleep(100 * time.Millisecond) // a slow answer
				fmt.Fprintf(c, "read %d bytes", len(b))
				return string(b)
			},
			send: "GET / HTTP/1.0\r\n\r\n", want: "read 18 bytes", serverGot: "GET / HTTP/1.0\r\n\r\n",
		},
		{
			name: "server answers after the request line",
			server: func(c *net.TCPConn) string {
				r := bufio.NewReader(c)
				line, _ := r.ReadString('\n')
				io.Copy(io.Discard, r) // the client's EOF comes first
				io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\npage")
				return line
			},
			send: "GET / HTTP/1.0\r\n\r\n", want: "HTTP/1.0 200 OK\r\n\r\npage", serverGot: "GET / HTTP/1.0\r\n",
		},
		{
			name: "server speaks first and stops sending, then reads the client",
			server: func(c *net.TCPConn) string {
				io.WriteString(c, "hello")
				c.CloseWrite()
				b, _ := io.ReadAll(c)
				return string(b)
			},
			serverFirst: true, send: "late data", want: "hello", serverGot: "late data",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			podSide, fwdConn := tcpPair(t)
			client, fwdStream := tcpPair(t)
			served := make(chan string, 1)
			go func() {
				defer podSide.Close()
				served <- tt.server(podSide)
			}()
			forwarded := make(chan error, 1)
			go func() {
				err := forward(context.Background(), halfCloser{fwdStream}, fwdConn)
				// As PortForward does once forward returns.
				fwdConn.Close()
				fwdStream.Close()
				forwarded <- err
			}()

			_ = client.SetDeadline(time.Now().Add(10 * time.Second))
			var got []byte
			var err error
			if tt.serverFirst {
				if got, err = io.ReadAll(client); err == nil {
					_, err = io.WriteString(client, tt.send)
				}
				client.CloseWrite()
			} else {
				io.WriteString(client, tt.send)
				client.CloseWrite()
				got, err = io.ReadAll(client)
			}
			if string(got) != tt.want || err != nil {
				t.Errorf("the client got %q, %v; want %q", got, err, tt.want)
			}
			select {
			case s := <-served:
				if s != tt.serverGot {
					t.Errorf("the server got %q, want %q", s, tt.serverGot)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the server did not finish")
			}
			select {
			case err := <-forwarded:
				if err != nil {
					t.Errorf("forward: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("forward did not return after both sides ended")
			}
		})
	}
}

// A direction that fails ends the forward at once: the caller closes both.
func TestForwardEndsOnError(t *testing.T) {
	podSide, fwdConn := tcpPair(t)
	client, fwdStream := tcpPair(t)
	defer client.Close()
	forwarded := make(chan error, 1)
	go func() { forwarded <- forward(context.Background(), halfCloser{fwdStream}, fwdConn) }()
	// The pod's side resets the connection while the client is silent.
	podSide.SetLinger(0)
	podSide.Close()
	select {
	case <-forwarded:
	case <-time.After(10 * time.Second):
		t.Fatal("forward did not return after the pod's connection broke")
	}
	fwdConn.Close()
	fwdStream.Close()
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(client); len(b) != 0 || err != nil {
		t.Errorf("the client read %q, %v after the pod's connection broke; want EOF", b, err)
	}
}

// halfCloser is a stream as the spdy port-forward stream behaves: Close
// ends only the sending side, reading goes on.
type halfCloser struct{ *net.TCPConn }

func (h halfCloser) Close() error { return h.CloseWrite() }

// tcpPair is two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.DialTCP("tcp4", nil, l.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
