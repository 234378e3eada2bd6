// Package crilog writes container output in the Kubernetes CRI log format,
// the format the kubelet parses for "kubectl logs":
//
//	<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\n
//
// F marks the end of a line ('\n' in the input, not part of content); P marks
// a fragment of a line that was split because it exceeded MaxLineSize, or a
// trailing fragment that had no newline when the stream ended.
package crilog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Stream names as written in records.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// MaxLineSize is the largest content of one record; longer lines are split.
const MaxLineSize = 16 * 1024

// readBufferSize bounds the memory Copy uses for reading, whatever the line
// length. It is paid per stream of every container, in the pod's monitor:
// conmon's size, a quarter of a pipe's default capacity.
const readBufferSize = 8 * 1024

const (
	tagPartial = 'P'
	tagFull    = 'F'
)

// File is a CRI log file shared by a container's streams. It is safe for
// concurrent use by several Copy calls (one per stream); each record is
// written with a single write(2) so records of different streams never
// interleave.
type File struct {
	path string

	// mu serialises record writes with Reopen and Close, so that a record
	// goes wholly to the old or the new file and never to a closed one.
	mu     sync.Mutex
	file   *os.File
	closed bool
}

// Open opens (creating, mode 0640, O_APPEND) the log at path. The parent
// directory must exist.
func Open(path string) (*File, error) {
	fd, err := openLog(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, file: fd}, nil
}

func openLog(path string) (*os.File, error) {
	// O_APPEND makes each write(2) land atomically at the end of the file,
	// even if another process (or a previous monitor) appends too.
	fd, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("crilog: open %s: %w", path, err)
	}
	return fd, nil
}

// Reopen closes the current file and opens its path again, for
// ReopenContainerLog after the kubelet renamed the file for rotation.
// Records written concurrently go either to the old or the new file, never
// lost between the two. If the new file cannot be opened, the old one stays
// in use.
func (f *File) Reopen() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("crilog: reopen %s: %w", f.path, os.ErrClosed)
	}
	// Open the new file before closing the old so a failure keeps logging alive.
	fd, err := openLog(f.path)
	if err != nil {
		return err
	}
	old := f.file
	f.file = fd
	if err := old.Close(); err != nil {
		return fmt.Errorf("crilog: close previous %s: %w", f.path, err)
	}
	return nil
}

// Close closes the file. Later writes by running Copy calls fail, but those
// calls keep draining their readers.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	return f.file.Close()
}

func (f *File) write(rec []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	// After Close, f.file is closed and Write reports os.ErrClosed.
	_, err := f.file.Write(rec)
	return err
}

// Copy reads r until EOF (or a read error) and writes its content as records
// of stream to f, returning nil at EOF. A trailing fragment without newline
// at EOF is written as a P record. The timestamp of a record is the time its
// content was read. If writing to the file fails (disk full, file closed),
// Copy keeps draining r, so the container never blocks on a full pipe, and
// returns the first write error at the end; otherwise it returns the read
// error, if any.
func (f *File) Copy(stream string, r io.Reader) error {
	if stream != Stdout && stream != Stderr {
		return fmt.Errorf("crilog: invalid stream %q", stream)
	}
	br := bufio.NewReaderSize(r, readBufferSize)
	// Both grow to the longest line seen (at most MaxLineSize and a
	// record's header): a container that logs short lines, or nothing,
	// does not pay for the longest line it could log.
	var pending, rec []byte
	var writeErr error

	emit := func(tag byte, content []byte) {
		rec = time.Now().AppendFormat(rec[:0], time.RFC3339Nano)
		rec = append(rec, ' ')
		rec = append(rec, stream...)
		rec = append(rec, ' ', tag, ' ')
		rec = append(rec, content...)
		rec = append(rec, '\n')
		// Keep trying after a failure: the disk may free up or Reopen may
		// install a working file, and records written then are not lost.
		if err := f.write(rec); err != nil && writeErr == nil {
			writeErr = err
		}
	}

	for {
		chunk, err := br.ReadSlice('\n')
		full := len(chunk) > 0 && chunk[len(chunk)-1] == '\n'
		if full {
			chunk = chunk[:len(chunk)-1]
		}
		// Split only when more content than MaxLineSize is known to belong
		// to the line, so a line of exactly MaxLineSize stays one F record.
		for len(pending)+len(chunk) > MaxLineSize {
			n := MaxLineSize - len(pending)
			pending = append(pending, chunk[:n]...)
			chunk = chunk[n:]
			emit(tagPartial, pending)
			pending = pending[:0]
		}
		pending = append(pending, chunk...)
		if full {
			emit(tagFull, pending)
			pending = pending[:0]
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if len(pending) > 0 {
				emit(tagPartial, pending)
			}
			if writeErr != nil {
				return writeErr
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// Record is one parsed log record.
type Record struct {
	Time    time.Time
	Stream  string
	Partial bool
	Content []byte
}

// Parse parses one record line, with or without its trailing '\n'. It
// returns an error on malformed lines. Content is a copy, independent of line.
func Parse(line []byte) (Record, error) {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	if bytes.IndexByte(line, '\n') >= 0 {
		return Record{}, errors.New("crilog: record contains a newline")
	}
	ts, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return Record{}, errors.New("crilog: missing stream field")
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return Record{}, fmt.Errorf("crilog: bad timestamp: %w", err)
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return Record{}, errors.New("crilog: missing tag field")
	}
	var rec Record
	rec.Time = t
	switch string(stream) {
	case Stdout:
		rec.Stream = Stdout
	case Stderr:
		rec.Stream = Stderr
	default:
		return Record{}, fmt.Errorf("crilog: bad stream %q", stream)
	}
	// The tag is always followed by a space, even when content is empty.
	tag, content, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return Record{}, errors.New("crilog: missing content separator")
	}
	switch {
	case len(tag) == 1 && tag[0] == tagPartial:
		rec.Partial = true
	case len(tag) == 1 && tag[0] == tagFull:
	default:
		return Record{}, fmt.Errorf("crilog: bad tag %q", tag)
	}
	rec.Content = bytes.Clone(content)
	if rec.Content == nil {
		rec.Content = []byte{}
	}
	return rec, nil
}
