package fsx

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// pread reads up to n bytes at off, to EOF.
func (x *Checker) pread(fl *file, off, n int64) ([]byte, error) {
	if int64(cap(x.rbuf)) < n {
		x.rbuf = make([]byte, n)
	}
	buf := x.rbuf[:n]
	got := 0
	for int64(got) < n {
		m, err := unix.Pread(fl.fd, buf[got:], off+int64(got))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return buf[:got], fmt.Errorf("pread %s at %#x, %#x bytes: %w (after %#x bytes)", fl.name, off, n, err, got)
		}
		if m == 0 {
			break
		}
		got += m
	}
	return buf[:got], nil
}

// modelRange is what a read of n bytes at off should return.
func modelRange(fl *file, off, n int64) []byte {
	size := fl.size()
	lo := min(off, size)
	hi := min(off+n, size)
	return fl.data[lo:hi]
}

// checkSize compares the size fstat reports with the model.
func (x *Checker) checkSize(fl *file) error {
	var st unix.Stat_t
	if err := unix.Fstat(fl.fd, &st); err != nil {
		return fmt.Errorf("fstat %s: %w", fl.name, err)
	}
	if st.Size != fl.size() {
		return fmt.Errorf("%s: fstat size %#x (%d), model %#x (%d)", fl.name, st.Size, st.Size, fl.size(), fl.size())
	}
	return nil
}

// checkRange reads n bytes at off through the descriptor and compares
// them with the model.
func (x *Checker) checkRange(fl *file, what string, off, n int64) error {
	got, err := x.pread(fl, off, n)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	want := modelRange(fl, off, n)
	if !slices.Equal(got, want) {
		return fmt.Errorf("%s: %s: pread at %#x, %#x bytes: %s", what, fl.name, off, n, diff(min(off, fl.size()), got, want))
	}
	return nil
}

// checkAfter is the check of every step: the size, and the range it
// touched plus a page either side.
func (x *Checker) checkAfter(fl *file, what string, off, n int64) error {
	if err := x.checkSize(fl); err != nil {
		return fmt.Errorf("after %s: %w", what, err)
	}
	lo := max(off-pageSize, 0)
	return x.checkRange(fl, "after "+what, lo, off+n+pageSize-lo)
}

// checkFile compares the whole file with the model, through the mount.
func (x *Checker) checkFile(fl *file, what string) error {
	if err := x.checkSize(fl); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return x.checkRange(fl, what+" (whole file through the mount)", 0, fl.size()+pageSize)
}

// checkBlob compares the blob in the store (Config.Store) with the model.
func (x *Checker) checkBlob(fl *file, what string) error {
	got, err := os.ReadFile(filepath.Join(x.cfg.Store, fl.name))
	if err != nil {
		return fmt.Errorf("%s: read blob: %w", what, err)
	}
	if !slices.Equal(got, fl.data) {
		return fmt.Errorf("%s: %s: blob in the store: %s", what, fl.name, diff(0, got, fl.data))
	}
	return nil
}

// checkAll compares every file with the model, through the mount and (with
// a store) as a blob. With the writeback cache, written data may still be
// only in the mount's page cache: fsync first.
func (x *Checker) checkAll(what string) error {
	for _, fl := range x.files {
		if err := x.checkFile(fl, what); err != nil {
			return err
		}
		if x.cfg.Store == "" {
			continue
		}
		if x.cfg.WritebackCache {
			if err := fl.f.Sync(); err != nil {
				return fmt.Errorf("%s: fsync %s before reading its blob: %w", what, fl.name, err)
			}
		}
		if err := x.checkBlob(fl, what); err != nil {
			return err
		}
	}
	return nil
}

// diff describes how got differs from want; base is the file offset of
// their first byte.
func diff(base int64, got, want []byte) string {
	n := min(len(got), len(want))
	i := 0
	for i < n && got[i] == want[i] {
		i++
	}
	if i == n {
		return fmt.Sprintf("got %#x bytes, want %#x (equal up to the shorter: file offset %#x)", len(got), len(want), base+int64(n))
	}
	last, count := i, 0
	gotZero := true
	for j := i; j < n; j++ {
		if got[j] != want[j] {
			last = j
			count++
			if got[j] != 0 {
				gotZero = false
			}
		}
	}
	end := min(i+16, n)
	return fmt.Sprintf("got %#x bytes, want %#x; first difference at file offset %#x: got % x, want % x; %d bytes differ, the last at %#x; the wrong bytes are all zero: %v",
		len(got), len(want), base+int64(i), got[i:end], want[i:end], count, base+int64(last), gotZero)
}

// allZero reports whether b holds only zeros.
func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
