// Package gensql reads the SQL text of the queries sqlc generated into gen/,
// for tests and benchmarks that must run exactly that SQL outside the
// generated accessors: EXPLAIN checks, and the benchmark that sends the same
// statements raw through pgx. It parses the generated source, so it works
// wherever the source tree is (tests), not in a deployed binary.
package gensql

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

var (
	once    sync.Once
	queries map[string]string
	loadErr error
)

// Query returns the SQL of the generated query named name (as in its
// "-- name:" line, e.g. "TaskClaim"), with $1, $2... placeholders in the
// order of the generated method's arguments.
func Query(name string) (string, error) {
	once.Do(load)
	if loadErr != nil {
		return "", loadErr
	}
	q, ok := queries[name]
	if !ok {
		return "", fmt.Errorf("gensql: no generated query %q", name)
	}
	return q, nil
}

// MustQuery is Query for tests: it panics when the query is missing.
func MustQuery(name string) string {
	q, err := Query(name)
	if err != nil {
		panic(err)
	}
	return q
}

func load() {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "gen")
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err == nil && len(files) == 0 {
		err = errors.New("no Go files")
	}
	if err != nil {
		loadErr = fmt.Errorf("gensql: %s: %w", dir, err)
		return
	}
	fset := token.NewFileSet()
	queries = map[string]string{}
	for _, path := range files {
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			loadErr = fmt.Errorf("gensql: parse %s: %w", path, err)
			return
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					sql, err := strconv.Unquote(lit.Value)
					if err != nil || !strings.HasPrefix(sql, "-- name: ") {
						continue
					}
					queries[exported(name.Name)] = sql
				}
			}
		}
	}
}

// exported turns sqlc's constant name (taskClaim) into the query's name
// (TaskClaim).
func exported(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}
