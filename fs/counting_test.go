package fs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// notRequests are the methods of fuse.RawFileSystem that are no FUSE
// request, which countingFS passes through its embedded interface
// uncounted: String and SetDebug are go-fuse's, Init hands the server to
// the bridge, OnUnmount runs when the serve loop ends.
var notRequests = []string{"String", "SetDebug", "Init", "OnUnmount"}

// TestCountingFSCoversRawFileSystem fails when go-fuse's RawFileSystem
// has a method that countingFS does not declare itself (embedding would
// still serve it, uncounted): each method of the interface, but those in
// notRequests, must be countingFS's own, from counting.go, not the
// wrapper the compiler generates for a method promoted from the embedded
// interface.
func TestCountingFSCoversRawFileSystem(t *testing.T) {
	t.Parallel()
	iface := reflect.TypeFor[fuse.RawFileSystem]()
	impl := reflect.TypeFor[*countingFS]()
	for i := range iface.NumMethod() {
		name := iface.Method(i).Name
		m, ok := impl.MethodByName(name)
		if !ok {
			t.Errorf("countingFS has no method %s", name)
			continue
		}
		file, _ := runtime.FuncForPC(m.Func.Pointer()).FileLine(m.Func.Pointer())
		own := filepath.Base(file) == "counting.go"
		switch {
		case slices.Contains(notRequests, name) && own:
			t.Errorf("countingFS declares %s, which notRequests says it passes through", name)
		case !slices.Contains(notRequests, name) && !own:
			t.Errorf("fuse.RawFileSystem.%s is not counted: countingFS inherits it from the embedded interface (%s); declare it in counting.go with an op of its own", name, file)
		}
	}
	for _, name := range notRequests {
		if _, ok := iface.MethodByName(name); !ok {
			t.Errorf("notRequests names %s, which fuse.RawFileSystem no longer has", name)
		}
	}
}

// TestCountingFSMethodsCount reads counting.go: each method of countingFS
// calls the embedded filesystem's method of the same name, and records
// the request with c.c.done under an op of its own; WRITE, which go-fuse
// serves through Writev or Write, is the one op two methods share. Every
// op has a name for the stats.
func TestCountingFSMethodsCount(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "counting.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	users := map[string][]string{} // op constant -> methods recording it
	methods := 0
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Recv == nil || recvType(fn) != "countingFS" {
			continue
		}
		methods++
		name := fn.Name.Name
		forwards, ops := false, []string{}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			switch sel := exprString(call.Fun); sel {
			case "c.RawFileSystem." + name:
				forwards = true
			case "c.c.done":
				if len(call.Args) > 0 {
					ops = append(ops, exprString(call.Args[0]))
				}
			}
			return true
		})
		if !forwards {
			t.Errorf("countingFS.%s does not call c.RawFileSystem.%s", name, name)
		}
		if len(ops) != 1 {
			t.Errorf("countingFS.%s records %d ops (%v), want 1", name, len(ops), ops)
			continue
		}
		users[ops[0]] = append(users[ops[0]], name)
	}
	if methods == 0 {
		t.Fatal("no countingFS method found in counting.go")
	}
	for op, ms := range users {
		slices.Sort(ms)
		if len(ms) > 1 && !(op == "opWrite" && slices.Equal(ms, []string{"Write", "Writev"})) {
			t.Errorf("op %s is recorded by %v: one op per request kind", op, ms)
		}
	}
	if len(users) != int(numOps) {
		t.Errorf("%d ops recorded by countingFS's methods, %d declared (numOps)", len(users), numOps)
	}
	seen := map[string]bool{}
	for i, n := range opNames {
		if n == "" || seen[n] {
			t.Errorf("op %d has the name %q: empty or repeated", i, n)
		}
		seen[n] = true
	}
}

func recvType(fn *ast.FuncDecl) string {
	t := fn.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// exprString spells a selector chain (a.b.c) or an identifier; "" for
// anything else.
func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		if x := exprString(e.X); x != "" {
			return x + "." + e.Sel.Name
		}
	}
	return ""
}
