package pglaunch_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/blue-banded-bee/taskq/internal/pglaunch"
)

// TestGiveHandsOverAndKeepsTheParentsOtherBits: as root, Give hands a tree
// to the "postgres" account and lets it search the private parent, without
// touching the parent's other bits (a sticky /tmp must stay sticky).
func TestGiveHandsOverAndKeepsTheParentsOtherBits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Give changes nothing unless the test runs as root")
	}
	as, err := pglaunch.Unprivileged("initdb")
	if err != nil {
		t.Skip(err)
	}
	parent := t.TempDir()
	if err := os.Chmod(parent, 0o700|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "cluster")
	file := filepath.Join(dir, "data", "file")
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	if err := as.Give(dir); err != nil {
		t.Fatal(err)
	}
	var owners []uint32
	for _, p := range []string{dir, filepath.Dir(file), file} {
		info, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		owners = append(owners, info.Sys().(*syscall.Stat_t).Uid)
	}
	if owners[0] == 0 || owners[1] != owners[0] || owners[2] != owners[0] {
		t.Errorf("owners of dir, data, file = %v; want the postgres account's uid on all three", owners)
	}
	info, err := os.Stat(parent)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.Mode()&(os.ModePerm|os.ModeSticky), 0o701|os.ModeSticky; got != want {
		t.Errorf("parent mode = %v; want %v (search for others added, sticky kept)", got, want)
	}
}
