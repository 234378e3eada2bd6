package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
)

// trash removes the dirs of removed containers in the background: a
// writable layer may hold gigabytes, and RemoveContainer must not wait
// for them to be deleted file by file (containerd too removes a
// snapshot's files in its GC, after the call). A dir is renamed into the
// trash, on the same filesystem, so it is gone from its place at once; one
// goroutine deletes what the trash holds, and empties what a stop of
// huskd left in it at the next start.
type trash struct {
	dir  string
	log  *slog.Logger
	seq  atomic.Uint64
	kick chan struct{}
}

// newTrash makes the trash dir and starts emptying it until ctx is done.
func newTrash(ctx context.Context, dir string, log *slog.Logger) (*trash, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("trash dir: %w", err)
	}
	t := &trash{dir: dir, log: log, kick: make(chan struct{}, 1)}
	t.kick <- struct{}{} // what the last huskd left
	go t.empty(ctx)
	return t, nil
}

// remove takes dir away: renamed into the trash and deleted later, or,
// when the trash is on another filesystem, deleted now. A dir that does
// not exist is removed.
func (t *trash) remove(dir string) error {
	dest := filepath.Join(t.dir, filepath.Base(dir)+"-"+strconv.FormatUint(t.seq.Add(1), 10))
	err := os.Rename(dir, dest)
	switch {
	case err == nil:
		select {
		case t.kick <- struct{}{}:
		default: // a round is due already
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		return nil
	case errors.Is(err, syscall.EXDEV):
		return os.RemoveAll(dir)
	}
	return err
}

// empty deletes what the trash holds each time it is kicked.
func (t *trash) empty(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		}
		ents, err := os.ReadDir(t.dir)
		if err != nil {
			t.log.Warn("read the trash of removed containers", "error", err)
			continue
		}
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(t.dir, e.Name())); err != nil {
				t.log.Warn("delete a removed container's dir", "dir", e.Name(), "error", err)
			}
		}
	}
}
