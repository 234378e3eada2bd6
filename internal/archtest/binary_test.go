package archtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHuskdKeepsDeadCodeElimination: huskd as the Makefile builds it
// links no text/template. Its reflective method calls make the linker keep
// every exported method of every reachable type, which cost huskd 4 MB of
// the code it maps, and so of its RSS (docs/benchmarks.md, "A full node").
// gRPC brings it through x/net/trace unless built with grpcnotrace.
func TestHuskdKeepsDeadCodeElimination(t *testing.T) {
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^HUSKD_TAGS := (.*)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("Makefile sets no HUSKD_TAGS")
	}
	tags := strings.TrimSpace(string(m[1]))
	if !regexp.MustCompile(`(?m)^\tCGO_ENABLED=0 \$\(GO\) build -tags \$\(HUSKD_TAGS\) .* \./cmd/huskd$`).Match(mk) {
		t.Error("the Makefile's build of huskd is not CGO_ENABLED=0 with -tags $(HUSKD_TAGS)")
	}
	cmd := exec.Command("go", "list", "-tags", tags, "-deps", "./cmd/huskd")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, d := range strings.Fields(string(out)) {
		if d == "text/template" || d == "golang.org/x/net/trace" {
			t.Errorf("huskd (tags %q) links %s", tags, d)
		}
	}
}
