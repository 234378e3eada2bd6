// Package archtest holds the import rules of docs/architecture.md true:
// the table of every import between husk's packages matches the code and
// points from earlier layers to later ones, only huskd reads the config,
// the lifecycles stay apart and below the CRI layer, oci stays pure, and
// the per-pod binaries stay small. Each rule the document states is one
// test here; change both together.
package archtest

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const module = "github.com/huskrt/husk/"

type pkg struct {
	ImportPath string
	GoFiles    []string
	Imports    []string
	Deps       []string
}

var (
	listOnce sync.Once
	listed   []pkg
	listErr  error
)

// packages lists the module's packages (go list runs once per test binary).
func packages(t *testing.T) []pkg {
	t.Helper()
	listOnce.Do(func() {
		out, err := exec.Command("go", "list", "-json", module+"...").Output()
		if err != nil {
			listErr = err
			return
		}
		dec := json.NewDecoder(strings.NewReader(string(out)))
		for {
			var p pkg
			if err := dec.Decode(&p); err == io.EOF {
				break
			} else if err != nil {
				listErr = err
				return
			}
			listed = append(listed, p)
		}
	})
	if listErr != nil {
		t.Fatalf("go list: %v", listErr)
	}
	if len(listed) < 10 {
		t.Fatalf("go list found %d packages", len(listed))
	}
	return listed
}

// short names a husk package as the document does: cmd/... as is,
// internal/ left out.
func short(path string) string {
	return strings.TrimPrefix(strings.TrimPrefix(path, module), "internal/")
}

// full is the import path of a package named as the document does.
func full(name string) string {
	if strings.HasPrefix(name, "cmd/") {
		return module + name
	}
	return module + "internal/" + name
}

func huskImports(p pkg) []string {
	var out []string
	for _, imp := range p.Imports {
		if strings.HasPrefix(imp, module) {
			out = append(out, short(imp))
		}
	}
	slices.Sort(out)
	return out
}

type docEntry struct {
	layer   int
	imports []string
}

// docTable parses the import table of docs/architecture.md.
func docTable(t *testing.T) map[string]docEntry {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `([^`]+)` \\| (\\d) \\|(.*)\\|$")
	table := map[string]docEntry{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "<!-- archtest:imports:begin -->":
			in = true
		case line == "<!-- archtest:imports:end -->":
			in = false
		case in:
			m := row.FindStringSubmatch(line)
			if m == nil {
				continue // the header
			}
			layer, _ := strconv.Atoi(m[2])
			var imps []string
			for _, s := range strings.Split(m[3], ",") {
				if s = strings.TrimSpace(s); s != "" {
					imps = append(imps, s)
				}
			}
			slices.Sort(imps)
			table[m[1]] = docEntry{layer: layer, imports: imps}
		}
	}
	if len(table) < 10 {
		t.Fatalf("docs/architecture.md: import table has %d rows", len(table))
	}
	return table
}

func TestImportsMatchArchitecture(t *testing.T) {
	table := docTable(t)
	seen := map[string]bool{}
	for _, p := range packages(t) {
		if len(p.GoFiles) == 0 {
			continue // tests only (this package)
		}
		name := short(p.ImportPath)
		seen[name] = true
		doc, ok := table[name]
		if !ok {
			t.Errorf("%s is missing from the import table of docs/architecture.md", name)
			continue
		}
		if got := huskImports(p); !slices.Equal(got, doc.imports) {
			t.Errorf("%s imports %v; docs/architecture.md says %v", name, got, doc.imports)
		}
		for _, imp := range doc.imports {
			if to, ok := table[imp]; ok && to.layer <= doc.layer {
				t.Errorf("%s (layer %d) imports %s (layer %d): imports point to later layers", name, doc.layer, imp, to.layer)
			}
		}
	}
	for name := range table {
		if !seen[name] {
			t.Errorf("docs/architecture.md lists %s, which is not a package", name)
		}
	}
}

// importers lists the packages that import path directly.
func importers(t *testing.T, path string) []string {
	var out []string
	for _, p := range packages(t) {
		if slices.Contains(p.Imports, path) {
			out = append(out, short(p.ImportPath))
		}
	}
	return out
}

func TestOnlyHuskdReadsConfig(t *testing.T) {
	if got := importers(t, module+"internal/config"); !slices.Equal(got, []string{"cmd/huskd"}) {
		t.Errorf("internal/config is imported by %v; only cmd/huskd may read the config", got)
	}
}

func TestSandboxAndContainerApart(t *testing.T) {
	for _, p := range packages(t) {
		var other string
		switch p.ImportPath {
		case full("sandbox"):
			other = full("container")
		case full("container"):
			other = full("sandbox")
		default:
			continue
		}
		if slices.Contains(p.Deps, other) {
			t.Errorf("%s depends on %s: the CRI handlers drive what spans both", short(p.ImportPath), short(other))
		}
	}
}

func TestDomainPackagesBelowCRI(t *testing.T) {
	for _, p := range packages(t) {
		if !strings.HasPrefix(p.ImportPath, module+"internal/") || p.ImportPath == full("cri") {
			continue
		}
		for _, imp := range p.Imports {
			if imp == full("cri") || strings.HasPrefix(imp, module+"cmd/") ||
				imp == "google.golang.org/grpc" || strings.HasPrefix(imp, "google.golang.org/grpc/") {
				t.Errorf("%s imports %s", short(p.ImportPath), imp)
			}
		}
	}
}

func TestOnlyCRIMakesGRPCStatus(t *testing.T) {
	for _, path := range []string{"google.golang.org/grpc/status", "google.golang.org/grpc/codes"} {
		if got := importers(t, path); !slices.Equal(got, []string{"cri"}) {
			t.Errorf("%s is imported by %v; only internal/cri maps errors to gRPC codes", path, got)
		}
	}
}

// The parts record metrics through small interfaces of their own
// (phase.Observer, image.PullObserver, cri.CallRecorder...): only
// internal/metrics knows client_golang.
func TestOnlyMetricsImportsPrometheus(t *testing.T) {
	for _, p := range packages(t) {
		if p.ImportPath == full("metrics") {
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, "github.com/prometheus/") {
				t.Errorf("%s imports %s; only internal/metrics records metrics", short(p.ImportPath), imp)
			}
		}
	}
}

func TestOCIIsPure(t *testing.T) {
	for _, p := range packages(t) {
		if p.ImportPath != full("oci") {
			continue
		}
		for _, imp := range p.Imports {
			switch {
			case strings.HasPrefix(imp, module),
				imp == "os", imp == "os/exec", imp == "syscall", imp == "net", strings.HasPrefix(imp, "net/"),
				strings.HasPrefix(imp, "golang.org/x/sys/"):
				t.Errorf("internal/oci imports %s", imp)
			}
		}
		return
	}
	t.Fatal("internal/oci not found")
}

// external reports whether an import path is outside the standard library.
func external(path string) bool { return strings.Contains(strings.SplitN(path, "/", 2)[0], ".") }

// husk-pause runs once per pod: the standard library, x/sys, and of husk
// only the encoding of its setup program (whose constants its assembly
// reads).
func TestPauseDependencies(t *testing.T) {
	for _, p := range packages(t) {
		if p.ImportPath != full("cmd/husk-pause") {
			continue
		}
		for _, d := range p.Deps {
			if external(d) && !strings.HasPrefix(d, "golang.org/x/sys/") && d != full("pausesetup") {
				t.Errorf("husk-pause depends on %s", d)
			}
		}
		return
	}
	t.Fatal("cmd/husk-pause not found")
}

// husk-monitor runs once per pod too: the standard library, x/sys, and of
// husk only the wire format, the CRI log writer and the atomic file writer.
func TestMonitorDependencies(t *testing.T) {
	allowed := map[string]bool{full("monitor/proto"): true, full("crilog"): true, full("atomicfile"): true}
	for _, p := range packages(t) {
		if p.ImportPath != full("cmd/husk-monitor") {
			continue
		}
		for _, d := range p.Deps {
			if strings.HasPrefix(d, module) && !allowed[d] ||
				external(d) && !strings.HasPrefix(d, "golang.org/x/sys/") && !strings.HasPrefix(d, module) {
				t.Errorf("husk-monitor depends on %s", d)
			}
		}
		return
	}
	t.Fatal("cmd/husk-monitor not found")
}

// test/e2e is a module of its own that requires no husk package: it sees
// huskd only through the CRI socket.
func TestE2EIsBlackBox(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "test", "e2e", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "module" {
			continue
		}
		for _, w := range f {
			if w == strings.TrimSuffix(module, "/") || strings.HasPrefix(w, module) {
				t.Errorf("test/e2e/go.mod names a husk module: %q", line)
			}
		}
	}
}
