package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// staleListenEnv makes the test binary the helper of TestListenReplacesStale:
// it listens on the path, hands the listening socket to a child that
// keeps it (as a child of a killed huskd between fork and exec does),
// prints the child's PID and exits.
const staleListenEnv = "HUSKD_TEST_STALE_LISTEN"

func TestMain(m *testing.M) {
	if path := os.Getenv(staleListenEnv); path != "" {
		l, err := net.Listen("unix", path)
		if err != nil {
			panic(err)
		}
		f, err := l.(*net.UnixListener).File()
		if err != nil {
			panic(err)
		}
		cmd := exec.Command("sleep", "60")
		cmd.ExtraFiles = []*os.File{f}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			panic(err)
		}
		os.Stdout.WriteString(strconv.Itoa(cmd.Process.Pid) + "\n")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A socket whose listener is gone is replaced, even while another process
// still holds it open; one a running server listens on is refused.
func TestListenReplacesStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "husk.sock")
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), staleListenEnv+"="+path)
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if err := helper.Wait(); err != nil {
		t.Fatal(err)
	}
	holder, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("helper said %q", line)
	}
	t.Cleanup(func() { _ = syscall.Kill(holder, syscall.SIGKILL) })
	if c, err := net.DialTimeout("unix", path, time.Second); err != nil {
		t.Fatalf("the held socket does not accept: %v", err)
	} else {
		c.Close()
	}

	l, err := listen(path)
	if err != nil {
		t.Fatalf("listen over a stale socket held by another process: %v", err)
	}
	defer l.Close()
	if _, err := listen(path); err == nil || !strings.Contains(err.Error(), "in use by a running server") {
		t.Errorf("listen over a live socket = %v", err)
	}
}
