package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// checkEnv names the file a process re-executed by verify is to check.
const checkEnv = "HUSK_STORE_CHECK"

// Exit codes of the checking process.
const (
	checkOK      = 0
	checkDamaged = 10
	checkLocked  = 11
	checkOpen    = 12
)

// init turns a process started by verify into the checker of one store
// file, before anything else of the binary runs: verify re-executes the
// binary it runs in (huskd, or a test binary), whichever that is.
func init() {
	if path := os.Getenv(checkEnv); path != "" {
		os.Exit(runCheck(path))
	}
}

// runCheck opens the file read-only and checks every page; what is wrong
// goes to stdout. A damage bbolt does not report but faults on (a page
// past the end of a truncated file) or panics on kills this process, not
// huskd.
func runCheck(path string) int {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 500 * time.Millisecond})
	if err != nil {
		fmt.Println(err)
		switch {
		case errors.Is(err, bolterrors.ErrTimeout):
			return checkLocked
		case errors.Is(err, os.ErrPermission), errors.Is(err, os.ErrNotExist):
			return checkOpen
		}
		return checkDamaged // not a bbolt file, bad meta pages, too small
	}
	defer db.Close()
	damaged := false
	err = db.View(func(tx *bolt.Tx) error {
		n := 0
		for err := range tx.Check() {
			damaged = true
			if n++; n <= 5 {
				fmt.Println(err)
			}
		}
		return nil
	})
	if err != nil || damaged {
		if err != nil {
			fmt.Println(err)
		}
		return checkDamaged
	}
	return checkOK
}

// verify checks an existing store file in a process of its own (this
// binary, re-executed): bbolt walks a damaged file in goroutines of its
// own, where a bad page faults or panics beyond any recover of huskd's.
// A damaged file is an error that names it and says what to do; huskd
// does not start on it, so that no record is ever dropped unnoticed.
func verify(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil // a new store
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("check store %s: %w", path, err)
	}
	var out bytes.Buffer
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), checkEnv+"="+path)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return fmt.Errorf("check store %s: %w", path, err)
	}
	detail := firstLines(out.String(), 3)
	switch code := cmd.ProcessState.ExitCode(); {
	case code == checkOK:
		return nil
	case code == checkLocked:
		return fmt.Errorf("open store %s: locked by another process (is another huskd running on this root?)", path)
	case code == checkOpen:
		return fmt.Errorf("open store %s: %s", path, detail)
	case code == -1:
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		detail = fmt.Sprintf("reading it killed the checking process with %s (a page past the end of the file: truncated?): %s", ws.Signal(), detail)
	}
	return damaged(path, detail)
}

// damaged is the error of a damaged store file: what is wrong, and what
// the operator can do.
func damaged(path, detail string) error {
	return fmt.Errorf("store %s is damaged: %s. huskd does not start on a damaged store, so that no record is "+
		"lost unnoticed; running pods are left as they are. Keep the file (for a bug report, or to salvage records "+
		"with the bbolt tool of go.etcd.io/bbolt/cmd/bbolt: check, surgery), then either put back a good copy of it, "+
		"or move it aside (mv %s %s.damaged) to start with an empty store: huskd then releases every pod and "+
		"container it has no record of (kills their processes, releases their network)", path, detail, path, path)
}

// firstLines returns up to n non-empty lines of s, joined with "; ", and
// none of a panic's stack trace.
func firstLines(s string, n int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "goroutine ") {
			break
		}
		if l = strings.TrimSpace(l); l != "" && len(out) < n {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return "no detail"
	}
	return strings.Join(out, "; ")
}
