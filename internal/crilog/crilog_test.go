package crilog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// readRecords parses every line of the log at path, failing the test on any
// malformed line.
func readRecords(t *testing.T, path string) []Record {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Fatalf("log does not end with a newline: %q", data)
	}
	var recs []Record
	for i, line := range bytes.SplitAfter(data, []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		r, err := Parse(line)
		if err != nil {
			t.Fatalf("line %d %q: %v", i, line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

func openTemp(t *testing.T) (*File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "0.log")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, path
}

type want struct {
	partial bool
	content string
}

func TestCopy(t *testing.T) {
	exact := strings.Repeat("a", MaxLineSize)
	plusOne := strings.Repeat("b", MaxLineSize) + "c"
	big := strings.Repeat("0123456789abcdef", 40*1024/16)

	tests := []struct {
		name   string
		stream string
		input  string
		want   []want
	}{
		{
			name:   "full lines",
			stream: Stdout,
			input:  "hello\nworld with spaces\n\ttabbed\r\n",
			want:   []want{{false, "hello"}, {false, "world with spaces"}, {false, "\ttabbed\r"}},
		},
		{
			name:   "stderr",
			stream: Stderr,
			input:  "oops\n",
			want:   []want{{false, "oops"}},
		},
		{
			name:   "empty input",
			stream: Stdout,
			input:  "",
			want:   nil,
		},
		{
			name:   "empty lines",
			stream: Stdout,
			input:  "\n\n",
			want:   []want{{false, ""}, {false, ""}},
		},
		{
			name:   "no trailing newline",
			stream: Stdout,
			input:  "one\ntwo",
			want:   []want{{false, "one"}, {true, "two"}},
		},
		{
			name:   "exactly MaxLineSize",
			stream: Stdout,
			input:  exact + "\n",
			want:   []want{{false, exact}},
		},
		{
			name:   "MaxLineSize plus one",
			stream: Stdout,
			input:  plusOne + "\n",
			want:   []want{{true, plusOne[:MaxLineSize]}, {false, "c"}},
		},
		{
			name:   "40 KiB",
			stream: Stderr,
			input:  big + "\nafter\n",
			want: []want{
				{true, big[:MaxLineSize]},
				{true, big[MaxLineSize : 2*MaxLineSize]},
				{false, big[2*MaxLineSize:]},
				{false, "after"},
			},
		},
		{
			name:   "40 KiB without newline",
			stream: Stdout,
			input:  big,
			want: []want{
				{true, big[:MaxLineSize]},
				{true, big[MaxLineSize : 2*MaxLineSize]},
				{true, big[2*MaxLineSize:]},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, path := openTemp(t)
			before := time.Now()
			if err := f.Copy(tt.stream, strings.NewReader(tt.input)); err != nil {
				t.Fatalf("Copy: %v", err)
			}
			after := time.Now()
			recs := readRecords(t, path)
			if len(recs) != len(tt.want) {
				t.Fatalf("got %d records, want %d", len(recs), len(tt.want))
			}
			prev := before
			for i, r := range recs {
				w := tt.want[i]
				if r.Stream != tt.stream {
					t.Errorf("record %d: stream %q, want %q", i, r.Stream, tt.stream)
				}
				if r.Partial != w.partial {
					t.Errorf("record %d: partial %v, want %v", i, r.Partial, w.partial)
				}
				if len(r.Content) > MaxLineSize {
					t.Errorf("record %d: content of %d bytes exceeds MaxLineSize", i, len(r.Content))
				}
				if string(r.Content) != w.content {
					t.Errorf("record %d: content %.40q (len %d), want %.40q (len %d)",
						i, r.Content, len(r.Content), w.content, len(w.content))
				}
				if r.Time.Before(prev) || r.Time.After(after) {
					t.Errorf("record %d: time %v not in [%v, %v]", i, r.Time, prev, after)
				}
				prev = r.Time
			}
		})
	}
}

func TestEmptyLineFormat(t *testing.T) {
	f, path := openTemp(t)
	if err := f.Copy(Stdout, strings.NewReader("\n")); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(data, []byte(" stdout F \n")) {
		t.Fatalf("record %q does not end with %q", data, " stdout F \n")
	}
	ts, _, _ := bytes.Cut(data, []byte{' '})
	if _, err := time.Parse(time.RFC3339Nano, string(ts)); err != nil {
		t.Fatalf("timestamp %q: %v", ts, err)
	}
}

func TestSplitConcatenation(t *testing.T) {
	for _, n := range []int{MaxLineSize - 1, MaxLineSize, MaxLineSize + 1, 40 * 1024, 3*readBufferSize + 7} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			f, path := openTemp(t)
			line := make([]byte, n)
			for i := range line {
				line[i] = 'a' + byte(i%26)
			}
			if err := f.Copy(Stdout, bytes.NewReader(append(line, '\n'))); err != nil {
				t.Fatal(err)
			}
			recs := readRecords(t, path)
			var got []byte
			for i, r := range recs {
				last := i == len(recs)-1
				if r.Partial == last {
					t.Errorf("record %d of %d: partial %v", i, len(recs), r.Partial)
				}
				if len(r.Content) > MaxLineSize {
					t.Errorf("record %d: %d bytes", i, len(r.Content))
				}
				got = append(got, r.Content...)
			}
			if wantRecs := (n + MaxLineSize - 1) / MaxLineSize; len(recs) != wantRecs {
				t.Errorf("got %d records, want %d", len(recs), wantRecs)
			}
			if !bytes.Equal(got, line) {
				t.Errorf("concatenated content differs from input line")
			}
		})
	}
}

// linesReader returns n lines "<prefix> <i>\n" as a reader.
func linesReader(prefix string, from, to int) io.Reader {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "%s %d\n", prefix, i)
	}
	return strings.NewReader(b.String())
}

// checkSequence verifies that the records of each stream are full lines
// "<stream> <i>" for i counting up from from[stream], and returns the next
// expected i for each stream.
func checkSequence(t *testing.T, recs []Record, from map[string]int) map[string]int {
	t.Helper()
	next := map[string]int{}
	for s, i := range from {
		next[s] = i
	}
	for _, r := range recs {
		if r.Partial {
			t.Fatalf("unexpected partial record %q", r.Content)
		}
		want := fmt.Sprintf("%s %d", r.Stream, next[r.Stream])
		if string(r.Content) != want {
			t.Fatalf("got %q, want %q", r.Content, want)
		}
		next[r.Stream]++
	}
	return next
}

func TestConcurrentStreams(t *testing.T) {
	const n = 1000
	f, path := openTemp(t)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, s := range []string{Stdout, Stderr} {
		wg.Go(func() {
			// A pipe written in small pieces interleaves the two streams.
			pr, pw := io.Pipe()
			go func() {
				for i := range n {
					fmt.Fprintf(pw, "%s %d\n", s, i)
				}
				pw.Close()
			}()
			errs <- f.Copy(s, pr)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	recs := readRecords(t, path)
	next := checkSequence(t, recs, nil)
	if next[Stdout] != n || next[Stderr] != n {
		t.Fatalf("counts: stdout %d, stderr %d, want %d each", next[Stdout], next[Stderr], n)
	}
}

func TestReopenAfterRename(t *testing.T) {
	const half = 500
	f, path := openTemp(t)
	rotated := path + ".20261130-103724"

	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- f.Copy(Stdout, pr) }()

	if _, err := io.Copy(pw, linesReader(Stdout, 0, half)); err != nil {
		t.Fatal(err)
	}
	// Wait until the first half is on disk so the split point is deterministic.
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Count(data, []byte{'\n'}) == half {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the first records")
		}
		time.Sleep(time.Millisecond)
	}

	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(pw, linesReader(Stdout, half, 2*half)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	old := readRecords(t, rotated)
	if next := checkSequence(t, old, nil); next[Stdout] != half {
		t.Fatalf("rotated file has %d records, want %d", next[Stdout], half)
	}
	cur := readRecords(t, path)
	if next := checkSequence(t, cur, map[string]int{Stdout: half}); next[Stdout] != 2*half {
		t.Fatalf("new file ends at %d, want %d", next[Stdout], 2*half)
	}
}

func TestReopenConcurrent(t *testing.T) {
	// Rotations racing with writers must neither lose nor reorder records.
	const n = 2000
	f, path := openTemp(t)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, s := range []string{Stdout, Stderr} {
		wg.Go(func() { errs <- f.Copy(s, linesReader(s, 0, n)) })
	}
	var rotated []string
	stop := make(chan struct{})
	rotDone := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				rotDone <- nil
				return
			default:
			}
			name := fmt.Sprintf("%s.%d", path, i)
			if err := os.Rename(path, name); err != nil {
				rotDone <- err
				return
			}
			rotated = append(rotated, name)
			if err := f.Reopen(); err != nil {
				rotDone <- err
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	wg.Wait()
	close(stop)
	if err := <-rotDone; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	next := map[string]int{}
	for _, p := range append(rotated, path) {
		next = checkSequence(t, readRecords(t, p), next)
	}
	if next[Stdout] != n || next[Stderr] != n {
		t.Fatalf("counts over %d files: stdout %d, stderr %d, want %d each",
			len(rotated)+1, next[Stdout], next[Stderr], n)
	}
}

func TestCopyAfterCloseDrains(t *testing.T) {
	f, _ := openTemp(t)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	r := strings.NewReader(strings.Repeat("x\n", 100000))
	err := f.Copy(Stdout, r)
	if !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Copy after Close: %v, want os.ErrClosed", err)
	}
	if r.Len() != 0 {
		t.Fatalf("%d bytes left unread", r.Len())
	}
	if err := f.Reopen(); err == nil {
		t.Fatal("Reopen after Close succeeded")
	}
}

func TestCopyInvalidStream(t *testing.T) {
	f, _ := openTemp(t)
	if err := f.Copy("stdin", strings.NewReader("x\n")); err == nil {
		t.Fatal("Copy with invalid stream succeeded")
	}
}

func TestParse(t *testing.T) {
	ts := "2026-11-30T10:37:24.123456789+01:00"
	wantTime, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		t.Fatal(err)
	}
	good := []struct {
		line    string
		stream  string
		partial bool
		content string
	}{
		{ts + " stdout F hello world\n", Stdout, false, "hello world"},
		{ts + " stderr P frag", Stderr, true, "frag"},
		{ts + " stdout F \n", Stdout, false, ""},
		{ts + " stdout F  two leading spaces", Stdout, false, " two leading spaces"},
		{"2026-11-30T10:37:24Z stdout F z", Stdout, false, "z"},
	}
	for _, tt := range good {
		r, err := Parse([]byte(tt.line))
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.line, err)
			continue
		}
		if r.Stream != tt.stream || r.Partial != tt.partial || string(r.Content) != tt.content {
			t.Errorf("Parse(%q) = %+v", tt.line, r)
		}
		if strings.HasPrefix(tt.line, ts) && !r.Time.Equal(wantTime) {
			t.Errorf("Parse(%q): time %v, want %v", tt.line, r.Time, wantTime)
		}
	}

	bad := map[string]string{
		"empty":              "",
		"only time":          ts,
		"no tag":             ts + " stdout",
		"no space after tag": ts + " stdout F",
		"bad stream":         ts + " stdin F x",
		"bad tag":            ts + " stdout X x",
		"long tag":           ts + " stdout FF x",
		"empty tag":          ts + " stdout  x",
		"bad time":           "2026-11-30 stdout F x",
		"no zone":            "2026-11-30T10:37:24.1 stdout F x",
		"embedded newline":   ts + " stdout F a\nb\n",
	}
	for name, line := range bad {
		if r, err := Parse([]byte(line)); err == nil {
			t.Errorf("%s: Parse(%q) = %+v, want error", name, line, r)
		}
	}
}
