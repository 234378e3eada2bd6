package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// Moving a thread into another namespace happens in internal/netns only,
// which keeps that work off the main thread and ends the thread after it
// (issue 16); cmd/huskd's init locks the main thread for the same reason.
// A new setns, unshare or thread lock elsewhere must go through there.
func TestNamespaceSwitchesOnlyInNetns(t *testing.T) {
	guarded := map[string]bool{"Setns": true, "Unshare": true, "LockOSThread": true}
	allowed := map[string]bool{"internal/netns/netns.go": true, "cmd/huskd/mainthread.go": true}
	fset := token.NewFileSet()
	for _, root := range []string{"../../cmd", "../../internal"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			rel := strings.TrimPrefix(filepath.ToSlash(path), "../../")
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if ok && guarded[sel.Sel.Name] && !allowed[rel] {
					t.Errorf("%s: %s outside internal/netns", fset.Position(sel.Pos()), sel.Sel.Name)
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
