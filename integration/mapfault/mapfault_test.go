package mapfault

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCatch reads past the end of a mapped file (SIGBUS, as Linux
// promises for a page wholly past EOF) and checks that the fault is
// caught and placed, that an access that does not fault is not reported,
// and that another panic goes on.
func TestCatch(t *testing.T) {
	t.Parallel()
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := os.Getpagesize()
	if err := f.Truncate(int64(page)); err != nil {
		t.Fatal(err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, 2*page, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)

	var c byte
	if faulted, _ := Catch(func() { c = b[page-1] }); faulted {
		t.Errorf("a read inside the file faulted")
	}
	faulted, addr := Catch(func() { c = b[page+10] })
	if !faulted {
		t.Fatalf("a read of the page past EOF did not fault (read %#x)", c)
	}
	if off := Offset(b, addr); off != int64(page+10) && off != int64(page) {
		t.Errorf("fault at offset %d of the mapping, want %d (or the page, %d)", off, page+10, page)
	}

	defer func() {
		if r := recover(); r != "not a fault" {
			t.Errorf("recovered %v, want the panic that is not a fault", r)
		}
	}()
	Catch(func() { panic("not a fault") })
	t.Error("a panic that is not a fault was swallowed")
}
