package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pattern returns n bytes of deterministic pseudo-random data; different
// seeds give different data.
func pattern(n int, seed uint64) []byte {
	b := make([]byte, n)
	x := seed*0x9E3779B97F4A7C15 + 0x2545F4914F6CDD1D
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// errnoOf returns the errno carried by err, or 0.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// errnoName renders an errno for messages: "EEXIST (file exists)".
func errnoName(e syscall.Errno) string {
	if e == 0 {
		return "success"
	}
	return fmt.Sprintf("%s (%d, %v)", errnoSym(e), int(e), e)
}

func errnoSym(e syscall.Errno) string {
	names := map[syscall.Errno]string{
		syscall.EPERM: "EPERM", syscall.ENOENT: "ENOENT", syscall.EIO: "EIO",
		syscall.ENXIO: "ENXIO", syscall.EBADF: "EBADF", syscall.EACCES: "EACCES",
		syscall.EBUSY: "EBUSY", syscall.EEXIST: "EEXIST", syscall.EXDEV: "EXDEV",
		syscall.ENOTDIR: "ENOTDIR", syscall.EISDIR: "EISDIR", syscall.EINVAL: "EINVAL",
		syscall.EFBIG: "EFBIG", syscall.ENOSPC: "ENOSPC", syscall.ENAMETOOLONG: "ENAMETOOLONG",
		syscall.ENOSYS: "ENOSYS", syscall.ENOTEMPTY: "ENOTEMPTY", syscall.ENODATA: "ENODATA",
		syscall.ENOTCONN: "ENOTCONN", syscall.EOPNOTSUPP: "EOPNOTSUPP", syscall.ENOMEM: "ENOMEM",
		syscall.EOVERFLOW: "EOVERFLOW", syscall.ERANGE: "ERANGE",
	}
	if n, ok := names[e]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}

// wantErrno fails the test unless err carries want.
func wantErrno(t testing.TB, what string, err error, want syscall.Errno) {
	t.Helper()
	if got := errnoOf(err); got != want || (want == 0 && err != nil) {
		t.Errorf("%s: got %v (%s), want %s", what, err, errnoName(got), errnoName(want))
	}
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

func lstat(t testing.TB, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return st
}

// checkContent fails the test unless the file at path holds want.
func checkContent(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("read %s: %v", path, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %s", path, diffBytes(got, want))
	}
}

// checkBoth checks that the file holds want both on the mount and as a blob
// in the store.
func checkBoth(t testing.TB, m *mount, rel string, want []byte) {
	t.Helper()
	checkContent(t, filepath.Join(m.mnt, rel), want)
	checkContent(t, filepath.Join(m.store, rel), want)
}

// diffBytes describes how got differs from want.
func diffBytes(got, want []byte) string {
	if bytes.Equal(got, want) {
		return "equal"
	}
	n := min(len(got), len(want))
	i := 0
	for i < n && got[i] == want[i] {
		i++
	}
	if i == n {
		return fmt.Sprintf("got %d bytes, want %d (equal up to the shorter length)", len(got), len(want))
	}
	end := min(i+16, n)
	return fmt.Sprintf("got %d bytes, want %d; first difference at offset %d: got % x, want % x",
		len(got), len(want), i, got[i:end], want[i:end])
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// logged waits (up to 5 s) for the daemon's output to contain every one of
// subs, and reports whether it did. The daemon writes a log line before it
// answers the request that caused it, but its output reaches m.out through
// a pipe and a copying goroutine, which may lag.
func logged(m *mount, subs ...string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := m.out.String()
		all := true
		for _, s := range subs {
			if !strings.Contains(out, s) {
				all = false
			}
		}
		if all {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
