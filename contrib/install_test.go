// Package contrib holds what husk installs beside its binaries (the systemd
// unit); its test runs `make install` into a temporary DESTDIR.
package contrib

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/huskrt/husk/internal/config"
)

func makeInstall(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("make", append([]string{"-C", "..", "--no-print-directory", "install"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make install %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds huskd")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make: %v", err)
	}
	dest := t.TempDir()
	makeInstall(t, "DESTDIR="+dest, "PREFIX=/usr")

	for _, f := range []struct {
		path string
		mode os.FileMode
	}{
		{"usr/bin/huskd", 0o755}, {"usr/bin/husk-pause", 0o755}, {"usr/bin/husk-monitor", 0o755},
		{"usr/lib/systemd/system/huskd.service", 0o644}, {"etc/husk/config.toml", 0o644},
	} {
		fi, err := os.Stat(filepath.Join(dest, f.path))
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if fi.Mode().Perm() != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, fi.Mode().Perm(), f.mode)
		}
	}
	out, err := exec.Command(filepath.Join(dest, "usr/bin/huskd"), "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "huskd ") {
		t.Errorf("installed huskd version: %v: %s", err, out)
	}

	unitPath := filepath.Join(dest, "usr/lib/systemd/system/huskd.service")
	unit, _ := os.ReadFile(unitPath)
	for _, want := range []string{"Type=notify", "ExecStart=/usr/bin/huskd\n", "KillMode=process", "Delegate=yes",
		"LimitNOFILE=infinity", "OOMScoreAdjust=-999", "Restart=always", "WantedBy=multi-user.target"} {
		if !strings.Contains(string(unit), "\n"+want) {
			t.Errorf("installed unit lacks %q:\n%s", want, unit)
		}
	}

	cfgPath := filepath.Join(dest, "etc/husk/config.toml")
	cfg, _ := os.ReadFile(cfgPath)
	want, _ := config.Default().Marshal()
	if string(cfg) != string(want) {
		t.Errorf("installed config is not `huskd config default`:\n%s", cfg)
	}
	if _, err := config.Parse(cfg); err != nil {
		t.Errorf("installed config does not parse: %v", err)
	}

	// A second install keeps the operator's config.
	mine := "log_format = \"json\"\n"
	if err := os.WriteFile(cfgPath, []byte(mine), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := makeInstall(t, "DESTDIR="+dest, "PREFIX=/usr"); !strings.Contains(out, "kept the existing") {
		t.Errorf("second install did not say it kept the config:\n%s", out)
	}
	if b, _ := os.ReadFile(cfgPath); string(b) != mine {
		t.Errorf("second install overwrote the config: %q", b)
	}
	if _, err := os.Stat(cfgPath + ".tmp"); err == nil {
		t.Error("install left config.toml.tmp")
	}

	verifyUnit(t, dest, unit)
}

// verifyUnit runs systemd-analyze verify on the installed unit, its
// ExecStart re-rooted into DESTDIR (verify wants the binary to exist).
// verify only warns about a bad directive: any output fails the test.
func verifyUnit(t *testing.T, dest string, unit []byte) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze not installed: unit not verified")
		return
	}
	dir := t.TempDir()
	rerooted := strings.Replace(string(unit), "ExecStart=/usr/bin/huskd", "ExecStart="+filepath.Join(dest, "usr/bin/huskd"), 1)
	p := filepath.Join(dir, "huskd.service")
	if err := os.WriteFile(p, []byte(rerooted), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", p).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
