package cri

import (
	"context"
	"io"
	"net"
)

// forward copies between a port-forward's stream and the connection to
// the pod until both directions have ended, one of them failed, or ctx is
// done; the caller then closes both. The end of one direction is passed on
// as a half-close and the other goes on: kubectl half-closes its data
// stream when its local client shuts its sending side down, and a server
// may answer only once it read the request to its end. containerd gives
// the other direction one second; this waits for it, which the pod's
// server ending (at the latest when the pod stops) bounds.
func forward(ctx context.Context, stream io.ReadWriteCloser, conn net.Conn) error {
	ended := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, stream)
		if err == nil {
			// The client finished sending: the server reads EOF.
			if tc, ok := conn.(interface{ CloseWrite() error }); ok {
				err = tc.CloseWrite()
			}
		}
		ended <- err
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		if err == nil {
			// The server finished sending. Closing a spdy stream sends
			// FIN: the client reads EOF and may still send.
			err = stream.Close()
		}
		ended <- err
	}()
	for range 2 {
		select {
		case err := <-ended:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
