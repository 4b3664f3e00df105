package fs

import (
	"syscall"
	"testing"
)

// TestAutoCacheStamps checks the stamps' rules: a file is current when its
// mtime, ctime and size are those recorded; a failed write makes it
// suspect, which only an open that drops the cache (reset) clears, not an
// attribute reply or a writer's release (record).
func TestAutoCacheStamps(t *testing.T) {
	var c autoCache
	st := syscall.Stat_t{Dev: 1, Ino: 2, Mode: syscall.S_IFREG | 0o644, Size: 10, Mtim: syscall.Timespec{Sec: 5}, Ctim: syscall.Timespec{Sec: 5}}
	if c.current(&st) {
		t.Fatal("a file never seen is current")
	}
	c.record(&st)
	if !c.current(&st) {
		t.Fatal("a file recorded is not current")
	}
	for _, change := range []func(s *syscall.Stat_t){
		func(s *syscall.Stat_t) { s.Size++ },
		func(s *syscall.Stat_t) { s.Mtim.Nsec++ },
		func(s *syscall.Stat_t) { s.Ctim.Nsec++ },
	} {
		changed := st
		change(&changed)
		if c.current(&changed) {
			t.Errorf("a file changed (%+v) is current", changed)
		}
	}
	c.forget(fileID{dev: 1, ino: 2})
	if c.current(&st) {
		t.Fatal("a file whose write failed is current")
	}
	c.record(&st)
	if c.current(&st) {
		t.Fatal("an attribute reply vouched again for a cache a failed write made suspect")
	}
	c.reset(&st)
	if !c.current(&st) {
		t.Fatal("an open that dropped the cache did not vouch for it")
	}
	dir := st
	dir.Mode = syscall.S_IFDIR | 0o755
	dir.Ino = 3
	c.record(&dir)
	if c.current(&dir) {
		t.Error("a directory is current: only regular files have a page cache to keep")
	}
}
