package sal_test

import (
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestErrorsAreDocumented holds each package's error list to its code:
// every exported Err* variable is named in the package documentation, and
// declared in the package's errors.go, so that a reader finds them all in
// two places and not scattered through the files.
func TestErrorsAreDocumented(t *testing.T) {
	for _, dir := range []string{".", "../resolve", "../resolve/registry", "../resolve/dns", "../mobility"} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			fset := token.NewFileSet()
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			var files []*ast.File
			for _, e := range entries {
				name := e.Name()
				if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
					continue
				}
				f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ParseComments)
				require.NoError(t, err)
				files = append(files, f)
			}
			pkg, err := doc.NewFromFiles(fset, files, "example.com/"+filepath.Base(dir))
			require.NoError(t, err)
			for _, v := range append(pkg.Vars, varsOfTypes(pkg)...) {
				for _, name := range v.Names {
					if !strings.HasPrefix(name, "Err") || !ast.IsExported(name) {
						continue
					}
					require.Regexp(t, regexp.MustCompile(`\b`+name+`\b`), pkg.Doc, "%s is missing from package %s's doc", name, pkg.Name)
					file := fset.Position(v.Decl.Pos()).Filename
					require.Equal(t, "errors.go", filepath.Base(file), "%s is declared in %s, not errors.go", name, file)
				}
			}
		})
	}
}

// varsOfTypes returns the variables go/doc files under a type (those whose
// declared type is one of the package's own, such as ErrAllDown).
func varsOfTypes(pkg *doc.Package) []*doc.Value {
	var out []*doc.Value
	for _, t := range pkg.Types {
		out = append(out, t.Vars...)
	}
	return out
}
