// Package archtest holds the import rules of docs/architecture.md true:
// imports point one way, from cmd to the CRI handlers to the domain
// packages, and the per-pod binaries stay small.
package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/huskrt/husk/"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestImportDirection(t *testing.T) {
	// Domain packages never reach up to the CRI layer or gRPC.
	domain := []string{"internal/sandbox", "internal/network", "internal/oci", "internal/ociruntime",
		"internal/store", "internal/config", "internal/image", "internal/container", "internal/monitor"}
	forbidden := map[string][]string{}
	for _, d := range domain {
		forbidden[module+d] = []string{module + "internal/cri", module + "cmd/", "google.golang.org/grpc"}
	}
	// sandbox and container do not import each other: the handlers drive
	// what spans both.
	forbidden[module+"internal/sandbox"] = append(forbidden[module+"internal/sandbox"], module+"internal/container")
	forbidden[module+"internal/container"] = append(forbidden[module+"internal/container"], module+"internal/sandbox")
	// oci is pure: it builds specs and touches nothing.
	forbidden[module+"internal/oci"] = append(forbidden[module+"internal/oci"], "os/exec", "net")

	pkgs := listPackages(t)
	if len(pkgs) < 5 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	for _, p := range pkgs {
		bad := forbidden[p.ImportPath]
		for _, imp := range p.Imports {
			for _, b := range bad {
				if imp == b || strings.HasPrefix(imp, b+"/") || (strings.HasSuffix(b, "/") && strings.HasPrefix(imp, b)) {
					t.Errorf("%s imports %s", p.ImportPath, imp)
				}
			}
		}
	}
}

// husk-pause runs once per pod: the standard library and x/sys only.
func TestPauseDependencies(t *testing.T) {
	for _, p := range listPackages(t) {
		if p.ImportPath != module+"cmd/husk-pause" {
			continue
		}
		for _, d := range p.Deps {
			if strings.Contains(strings.SplitN(d, "/", 2)[0], ".") && !strings.HasPrefix(d, "golang.org/x/sys/") {
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
	allowed := map[string]bool{module + "internal/monitor/proto": true, module + "internal/crilog": true,
		module + "internal/atomicfile": true}
	for _, p := range listPackages(t) {
		if p.ImportPath != module+"cmd/husk-monitor" {
			continue
		}
		for _, d := range p.Deps {
			external := strings.Contains(strings.SplitN(d, "/", 2)[0], ".")
			if strings.HasPrefix(d, module) && !allowed[d] || external && !strings.HasPrefix(d, "golang.org/x/sys/") && !strings.HasPrefix(d, module) {
				t.Errorf("husk-monitor depends on %s", d)
			}
		}
		return
	}
	t.Fatal("cmd/husk-monitor not found")
}
