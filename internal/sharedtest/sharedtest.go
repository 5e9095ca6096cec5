// Package sharedtest holds the small helpers several test packages need: a
// buffer that a process or logger writes while the test reads it, and the
// root of the repository, for tests that build its commands, run its
// scripts or read its SQL files.
package sharedtest

import (
	"bytes"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// Buffer is a bytes.Buffer safe for concurrent writers and readers. The zero
// value is empty and ready to use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// RepoRoot is the directory of this repository's checkout (where go.mod
// is), found from this source file's place in it.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("sharedtest: no caller information to find the repository root")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}
