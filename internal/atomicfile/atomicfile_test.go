package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// dirSyncs records the directories synced and what the target held at
// that moment; with fail set, the sync fails.
type dirSyncs struct {
	target string
	fail   error
	dirs   []string
	seen   []string // the target's content at each sync
}

func watchDirSyncs(t *testing.T, target string, fail error) *dirSyncs {
	t.Helper()
	s := &dirSyncs{target: target, fail: fail}
	syncDir = func(dir string) error {
		s.dirs = append(s.dirs, dir)
		b, _ := os.ReadFile(s.target)
		s.seen = append(s.seen, string(b))
		if s.fail != nil {
			return s.fail
		}
		return fsyncDir(dir)
	}
	t.Cleanup(func() { syncDir = fsyncDir })
	return s
}

// temps lists the temporary files left in dir.
func temps(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if IsTemp(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestFile(t *testing.T) {
	errSync := errors.New("injected dir sync failure")
	commit := func(content string) func(*File) error {
		return func(f *File) error {
			// Two writes: the streaming form, not one buffer.
			if _, err := f.Write([]byte(content[:len(content)/2])); err != nil {
				return err
			}
			if _, err := f.Write([]byte(content[len(content)/2:])); err != nil {
				return err
			}
			return f.Commit()
		}
	}
	tests := []struct {
		name     string
		old      string // "" = no file; "dir" = a non-empty directory in the way
		perm     os.FileMode
		do       func(*File) error
		syncErr  error
		wantErr  bool
		want     string // content after; "" = no file; "dir" = the directory
		wantMode os.FileMode
		wantSync bool // the directory was synced, after the rename
	}{
		{name: "new file", perm: 0o640, do: commit("new content"), want: "new content", wantMode: 0o640, wantSync: true},
		{name: "replaces the old content", old: "old content", perm: 0o600, do: commit("new content"), want: "new content", wantMode: 0o600, wantSync: true},
		{name: "mode is the one asked for", old: "old", perm: 0o755, do: commit("#!/bin/sh\n"), want: "#!/bin/sh\n", wantMode: 0o755, wantSync: true},
		{name: "empty content", old: "old", perm: 0o644, do: commit(""), want: "", wantMode: 0o644, wantSync: true},
		{name: "abort keeps the old content", old: "old content", perm: 0o644,
			do: func(f *File) error { f.Write([]byte("half")); f.Abort(); return nil }, want: "old content", wantMode: 0o600},
		{name: "abort leaves no file", perm: 0o644,
			do: func(f *File) error { f.Write([]byte("half")); f.Abort(); return nil }},
		{name: "abort after commit does nothing", old: "old", perm: 0o644,
			do: func(f *File) error { err := commit("new")(f); f.Abort(); return err }, want: "new", wantMode: 0o644, wantSync: true},
		{name: "second commit fails", old: "old", perm: 0o644,
			do: func(f *File) error {
				if err := commit("new")(f); err != nil {
					return fmt.Errorf("first commit: %w", err)
				}
				return f.Commit()
			}, wantErr: true, want: "new", wantMode: 0o644, wantSync: true},
		{name: "failed rename leaves no temporary file", old: "dir", perm: 0o644, do: commit("new"), wantErr: true, want: "dir"},
		{name: "failed dir sync is reported, content is new", old: "old", perm: 0o644, do: commit("new"),
			syncErr: errSync, wantErr: true, want: "new", wantMode: 0o644, wantSync: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "target.json")
			switch tt.old {
			case "":
			case "dir":
				if err := os.MkdirAll(filepath.Join(target, "x"), 0o755); err != nil {
					t.Fatal(err)
				}
			default:
				if err := os.WriteFile(target, []byte(tt.old), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			syncs := watchDirSyncs(t, target, tt.syncErr)
			f, err := Create(target, tt.perm)
			if err != nil {
				t.Fatal(err)
			}
			if got := temps(t, dir); len(got) != 1 {
				t.Fatalf("while writing: temporary files %v, want one", got)
			}
			err = tt.do(f)
			if (err != nil) != tt.wantErr {
				t.Errorf("error = %v, want error: %v", err, tt.wantErr)
			}
			if tt.syncErr != nil && !errors.Is(err, tt.syncErr) {
				t.Errorf("error = %v, want the dir sync's", err)
			}
			if got := temps(t, dir); len(got) != 0 {
				t.Errorf("temporary files left: %v", got)
			}
			fi, statErr := os.Stat(target)
			switch {
			case tt.want == "dir":
				if statErr != nil || !fi.IsDir() {
					t.Errorf("the directory in the way is gone: %v", statErr)
				}
			case tt.want == "" && tt.wantMode == 0:
				if !errors.Is(statErr, os.ErrNotExist) {
					t.Errorf("target exists (%v), want none", statErr)
				}
			default:
				b, err := os.ReadFile(target)
				if err != nil || string(b) != tt.want {
					t.Errorf("target = %q, %v; want %q", b, err, tt.want)
				}
				if fi.Mode().Perm() != tt.wantMode {
					t.Errorf("mode = %v, want %v", fi.Mode().Perm(), tt.wantMode)
				}
			}
			wantDirs := []string(nil)
			if tt.wantSync {
				wantDirs = []string{dir}
			}
			if !slices.Equal(syncs.dirs, wantDirs) {
				t.Errorf("dirs synced = %v, want %v", syncs.dirs, wantDirs)
			}
			if tt.wantSync && len(syncs.seen) == 1 && syncs.seen[0] != tt.want {
				t.Errorf("at the dir sync the target held %q: the sync must follow the rename", syncs.seen[0])
			}
		})
	}
}

func TestCreateFails(t *testing.T) {
	dir := t.TempDir()
	for _, path := range []string{filepath.Join(dir, "missing", "f"), dir + "/"} {
		if f, err := Create(path, 0o644); err == nil {
			f.Abort()
			t.Errorf("Create(%q) succeeded", path)
		}
	}
	if got := temps(t, dir); len(got) != 0 {
		t.Errorf("temporary files left: %v", got)
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "exit.json")
	syncs := watchDirSyncs(t, target, nil)
	for _, content := range []string{`{"code":0}`, `{"code":137}`} {
		if err := WriteFile(target, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(target); string(b) != content {
			t.Errorf("target = %q, want %q", b, content)
		}
	}
	if got := temps(t, dir); len(got) != 0 {
		t.Errorf("temporary files left: %v", got)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("WriteFile into a missing dir succeeded")
	}
	// A relative name is written in its own dir too, not in os.TempDir.
	t.Chdir(dir)
	f, err := Create("relative.json", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if got := temps(t, dir); len(got) != 1 {
		t.Errorf("temporary files in the target's dir: %v, want one", got)
	}
	f.Write([]byte("{}"))
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "relative.json")); err != nil || string(b) != "{}" {
		t.Errorf("relative write: %q, %v", b, err)
	}
	if want := []string{dir, dir, "."}; !slices.Equal(syncs.dirs, want) {
		t.Errorf("dirs synced %v, want %v", syncs.dirs, want)
	}
}

// TestReadersSeeOldOrNew replaces a file over and over while readers read
// it: each read is one whole version, never a part, a mix or nothing.
func TestReadersSeeOldOrNew(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "f")
	version := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 64<<10) }
	if err := WriteFile(target, version(0), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad []string
	var mu sync.Mutex
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				b, err := os.ReadFile(target)
				if err != nil || len(b) != 64<<10 || bytes.Count(b, b[:1]) != len(b) {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("read %d bytes, err %v", len(b), err))
					mu.Unlock()
				}
			}
		}()
	}
	for i := 1; i <= 50; i++ {
		f, err := Create(target, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		v := version(i)
		for off := 0; off < len(v); off += 4096 {
			if _, err := f.Write(v[off : off+4096]); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d torn reads, first: %s", len(bad), bad[0])
	}
}

// RenameDir moves a filled directory into place, or fails with ErrExist
// leaving both as they were; SyncFS then makes it durable (what a crash
// would lose cannot be seen from here: that it runs and fails cleanly is).
func TestRenameDirAndSyncFS(t *testing.T) {
	tests := []struct {
		name      string
		dstExists bool
		wantExist bool
	}{
		{name: "moves the directory into place"},
		{name: "an existing dst is ErrExist", dstExists: true, wantExist: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			tmp, dst := filepath.Join(root, "tmp", "layer-1"), filepath.Join(root, "layers", "abc")
			for _, d := range []string{filepath.Join(tmp, "etc"), filepath.Dir(dst)} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(tmp, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if tt.dstExists {
				if err := os.MkdirAll(filepath.Join(dst, "other"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			err := RenameDir(tmp, dst)
			if got := errors.Is(err, os.ErrExist); got != tt.wantExist || (err != nil) != tt.wantExist {
				t.Fatalf("RenameDir = %v, want ErrExist: %v", err, tt.wantExist)
			}
			if tt.wantExist {
				if _, err := os.Stat(filepath.Join(tmp, "etc", "passwd")); err != nil {
					t.Errorf("tmp not left to the caller: %v", err)
				}
				if _, err := os.Stat(filepath.Join(dst, "other")); err != nil {
					t.Errorf("existing dst changed: %v", err)
				}
				return
			}
			if b, err := os.ReadFile(filepath.Join(dst, "etc", "passwd")); err != nil || len(b) == 0 {
				t.Errorf("dst content: %q, %v", b, err)
			}
			if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("tmp still there: %v", err)
			}
			if err := SyncFS(dst); err != nil {
				t.Errorf("SyncFS: %v", err)
			}
		})
	}
	if err := RenameDir(filepath.Join(t.TempDir(), "missing"), filepath.Join(t.TempDir(), "x")); err == nil {
		t.Error("RenameDir of a missing dir succeeded")
	}
	if err := SyncFS(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("SyncFS of a missing path succeeded")
	}
}

func TestIsTempAndRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(filepath.Join(dir, "10-husk.conflist"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Base(f.f.Name())
	f.f.Close() // a writer that crashed: neither committed nor aborted
	tests := []struct {
		name string
		temp bool
	}{
		{crashed, true},
		{".exit.json.tmp-123", true},
		{"10-husk.conflist", false},
		{"exit.json.tmp", false}, // no leading dot
		{".hidden", false},
		{"4f2a9c", false},
	}
	for _, tt := range tests {
		if got := IsTemp(tt.name); got != tt.temp {
			t.Errorf("IsTemp(%q) = %v, want %v", tt.name, got, tt.temp)
		}
		if tt.name != crashed {
			if err := os.WriteFile(filepath.Join(dir, tt.name), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if filepath.Ext(crashed) == ".conflist" {
		t.Errorf("temporary file %s ends in its target's extension", crashed)
	}
	removed, err := RemoveTemps(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".exit.json.tmp-123", crashed}
	slices.Sort(removed)
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	for _, tt := range tests {
		if _, err := os.Stat(filepath.Join(dir, tt.name)); (err == nil) == tt.temp {
			t.Errorf("%s: exists %v after RemoveTemps", tt.name, err == nil)
		}
	}
}
