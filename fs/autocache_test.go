package fs

import (
	"syscall"
	"testing"
)

// TestAutoCacheStamps checks the stamps' rules: only an open that drops
// the cache (reset) makes a file current; a file is current while its
// mtime, ctime and size are those; an attribute reply that shows the file
// otherwise, or a failed write (forget), takes the stamp away for good,
// and one that shows it the same keeps it.
func TestAutoCacheStamps(t *testing.T) {
	var c autoCache
	st := syscall.Stat_t{Dev: 1, Ino: 2, Mode: syscall.S_IFREG | 0o644, Size: 10, Mtim: syscall.Timespec{Sec: 5}, Ctim: syscall.Timespec{Sec: 5}}
	if c.current(&st) {
		t.Fatal("a file never seen is current")
	}
	c.confirm(&st)
	if c.current(&st) {
		t.Fatal("an attribute reply vouched for a cache no open dropped")
	}
	c.reset(&st)
	if !c.current(&st) {
		t.Fatal("a file whose cache an open dropped is not current")
	}
	c.confirm(&st)
	if !c.current(&st) {
		t.Fatal("an attribute reply showing the file as it was took its stamp away")
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
	changed := st
	changed.Mtim.Sec++
	c.confirm(&changed)
	if c.current(&st) || c.current(&changed) {
		t.Fatal("a file an attribute reply showed changed is still current, as it was or as it is")
	}
	c.reset(&st)
	c.forget(fileID{dev: 1, ino: 2})
	if c.current(&st) {
		t.Fatal("a file whose write failed is current")
	}
	dir := st
	dir.Mode = syscall.S_IFDIR | 0o755
	dir.Ino = 3
	c.reset(&dir)
	if c.current(&dir) {
		t.Error("a directory is current: only regular files have a page cache to keep")
	}
}
