package sim

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoWallClockOrGlobalRand fails on calls that would make the simulated
// path nondeterministic: wall-clock reads and timers, and math/rand's
// package-level (globally seeded) functions, in the simulator and in the
// code it runs. clock/ is exempt: it wraps the wall clock for production.
// Allowed on purpose: context.WithTimeout (actors bound journal reads with
// it; the in-memory journal only checks ctx.Err, and the timer never fires
// in a run that takes less than its 30 s), and the go statements in
// actors.Scheduler.Stop and the default Deps.Go (the simulator never calls
// Stop and passes its own Go). In sim itself, go statements are banned too.
// crypto/rand is banned as well, but in msgid, whose Crypto source is the
// production default for the random part of ids: the simulator passes its
// own (Deps.Random), drawn from the seed.
func TestNoWallClockOrGlobalRand(t *testing.T) {
	banned := map[string]map[string]bool{
		"time": {"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true,
			"AfterFunc": true, "NewTimer": true, "NewTicker": true, "Tick": true},
		"crypto/rand": {"Read": true, "Int": true, "Prime": true, "Text": true},
	}
	randOK := map[string]bool{"New": true, "NewPCG": true, "NewSource": true, "NewChaCha8": true, "NewZipf": true}
	globs := []string{"*.go", "../actors/*.go", "../actors/slot/*.go", "../msgid/*.go", "../journal/memory.go"}
	n := 0
	for _, g := range globs {
		files, err := filepath.Glob(g)
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			n++
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			names := map[string]string{} // local name → import path
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				name := p[strings.LastIndex(p, "/")+1:]
				if p == "math/rand/v2" {
					name = "rand"
				}
				if imp.Name != nil {
					name = imp.Name.Name
				}
				names[name] = p
			}
			inSim := filepath.Dir(path) == "."
			ast.Inspect(f, func(node ast.Node) bool {
				if g, ok := node.(*ast.GoStmt); ok && inSim {
					t.Errorf("%s: go statement in the simulator", fset.Position(g.Pos()))
				}
				call, ok := node.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pkg, ok := sel.X.(*ast.Ident)
				if !ok || pkg.Obj != nil { // a local variable, not a package
					return true
				}
				switch p := names[pkg.Name]; {
				case p == "crypto/rand" && filepath.Base(filepath.Dir(path)) == "msgid":
				case banned[p][sel.Sel.Name]:
					t.Errorf("%s: %s.%s on the simulated path", fset.Position(call.Pos()), p, sel.Sel.Name)
				case (p == "math/rand" || p == "math/rand/v2") && !randOK[sel.Sel.Name]:
					t.Errorf("%s: package-level %s.%s (global seed)", fset.Position(call.Pos()), p, sel.Sel.Name)
				}
				return true
			})
		}
	}
	if n < 10 {
		t.Fatalf("checked only %d files: wrong paths?", n)
	}
}
