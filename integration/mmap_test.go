package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/integration/mapfault"
)

// Client memory mappings of files on the mount, made by the test process
// (the daemon is another process, so faults on the mount cannot deadlock).

// mmapFile maps length bytes of f and unmaps them at the end of the test
// unless the test did (with munmap).
func mmapFile(t testing.TB, f *os.File, length, prot, flags int) []byte {
	t.Helper()
	b, err := unix.Mmap(int(f.Fd()), 0, length, prot, flags)
	if err != nil {
		t.Fatalf("mmap %s, %d bytes: %v", f.Name(), length, err)
	}
	live := &liveMapping{}
	liveMappings.Lock()
	liveMappings.m[&b[0]] = live
	liveMappings.Unlock()
	t.Cleanup(func() {
		liveMappings.Lock()
		defer liveMappings.Unlock()
		if live.unmapped {
			return
		}
		live.unmapped = true
		delete(liveMappings.m, &b[0])
		if err := unix.Munmap(b); err != nil {
			t.Errorf("munmap: %v", err)
		}
	})
	return b
}

// liveMapping is one mapping made by mmapFile. Its state is per mapping,
// not per address: once a test unmaps, another test running in parallel
// may be given the same address, and the first test's cleanup must not
// unmap that one.
type liveMapping struct {
	unmapped bool // guarded by liveMappings
}

// liveMappings holds the mappings made by mmapFile and not yet unmapped,
// by their first byte.
var liveMappings = struct {
	sync.Mutex
	m map[*byte]*liveMapping
}{m: map[*byte]*liveMapping{}}

// munmap unmaps a mapping made by mmapFile.
func munmap(t testing.TB, b []byte) {
	t.Helper()
	liveMappings.Lock()
	defer liveMappings.Unlock()
	live := liveMappings.m[&b[0]]
	if live == nil {
		t.Fatalf("munmap of a mapping mmapFile did not make, or unmapped already")
	}
	live.unmapped = true
	delete(liveMappings.m, &b[0])
	if err := unix.Munmap(b); err != nil {
		t.Fatalf("munmap: %v", err)
	}
}

// switchSets are the combinations of the kernel's FUSE caching switches
// that every client mmap case must hold under: all of them, as the kernel
// allows each (shared mmap with --direct-io through
// CAP_DIRECT_IO_ALLOW_MMAP).
var switchSets = [][]string{
	nil,
	{"--keep-cache"},
	{"--direct-io"},
	{"--writeback-cache"},
	{"--keep-cache", "--writeback-cache"},
	{"--direct-io", "--writeback-cache"},
	{"--keep-cache", "--direct-io"},
	{"--keep-cache", "--direct-io", "--writeback-cache"},
	// The kernel keeping cached pages when mtime changes: every change
	// through the mount must still reach every reader.
	{"--keep-cache", "--auto-inval-data=false"},
	{"--keep-cache", "--writeback-cache", "--auto-inval-data=false"},
}

// forEachSwitchSet runs fn in a subtest per switch set, each on its own
// mount, in parallel.
func forEachSwitchSet(t *testing.T, fn func(t *testing.T, m *mount)) {
	t.Parallel()
	for _, sw := range switchSets {
		name := "defaults"
		if sw != nil {
			name = strings.Join(sw, "")
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if sw != nil && loopbackMode {
				t.Skip("mmapfs switches")
			}
			fn(t, startMount(t, sw...))
		})
	}
}

func openRW(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestMmapSharedMsync(t *testing.T) { forEachSwitchSet(t, mmapSharedMsync) }

func mmapSharedMsync(t *testing.T, m *mount) {
	p := filepath.Join(m.mnt, "f")
	want := pattern(3*4096+500, 20)
	writeFile(t, p, want)
	f := openRW(t, p)
	b := mmapFile(t, f, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if !bytes.Equal(b, want) {
		t.Fatalf("mapping holds the wrong data: %s", diffBytes(b, want))
	}
	for i, off := range []int{0, 4095, 4096, 9000, len(want) - 1} {
		b[off] = byte(0xF0 + i)
		want[off] = byte(0xF0 + i)
	}
	copy(b[5000:], "written through a shared mapping")
	copy(want[5000:], "written through a shared mapping")
	if err := unix.Msync(b, unix.MS_SYNC); err != nil {
		t.Fatalf("msync(MS_SYNC): %v", err)
	}
	// read() on the mount, through another descriptor, and the blob.
	checkBoth(t, m, "f", want)
	// The blob has them even without going through the mount's page cache.
	if st := lstat(t, filepath.Join(m.store, "f")); st.Size != int64(len(want)) {
		t.Errorf("blob size %d, want %d", st.Size, len(want))
	}
}

func TestMmapPrivate(t *testing.T) { forEachSwitchSet(t, mmapPrivate) }

func mmapPrivate(t *testing.T, m *mount) {
	p := filepath.Join(m.mnt, "f")
	orig := pattern(10000, 21)
	writeFile(t, p, orig)
	f := openRW(t, p)
	priv := mmapFile(t, f, len(orig), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	shared := mmapFile(t, f, len(orig), unix.PROT_READ, unix.MAP_SHARED)
	copy(priv[100:], "private write")
	priv[9999] = ^orig[9999]
	if !bytes.Equal(priv[100:113], []byte("private write")) {
		t.Errorf("private mapping does not hold its own write")
	}
	if err := unix.Msync(priv, unix.MS_SYNC); err != nil {
		t.Fatalf("msync of a private mapping: %v", err)
	}
	if !bytes.Equal(shared, orig) {
		t.Errorf("a shared mapping sees a private write: %s", diffBytes(shared, orig))
	}
	checkBoth(t, m, "f", orig)
	munmap(t, priv)
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkBoth(t, m, "f", orig)
}

func TestMmapPastEOF(t *testing.T) { forEachSwitchSet(t, mmapPastEOF) }

func mmapPastEOF(t *testing.T, m *mount) {
	p := filepath.Join(m.mnt, "f")
	const size, length = 5000, 15000
	orig := pattern(size, 22)
	writeFile(t, p, orig)
	f := openRW(t, p)
	b := mmapFile(t, f, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if !bytes.Equal(b[:size], orig) {
		t.Errorf("bytes 0..%d of the mapping: %s", size, diffBytes(b[:size], orig))
	}
	if !isZero(b[size:8192]) {
		t.Errorf("bytes %d..8191 (past EOF in the last page) are not zero", size)
	}
	// Writes past EOF within the last page never reach the file.
	copy(b[6000:], "beyond EOF")
	b[8191] = 0xFF
	if err := unix.Msync(b[:8192], unix.MS_SYNC); err != nil {
		t.Fatalf("msync: %v", err)
	}
	// Page 2 lies wholly past EOF: touching it is SIGBUS.
	var got byte
	faulted, _ := mapfault.Catch(func() { got = b[8192] })
	if !faulted {
		t.Errorf("read at offset 8192 (page 2, past EOF) of a %d-byte file: got %#x, want SIGBUS", size, got)
	}
	faulted, _ = mapfault.Catch(func() { b[length-1] = 1 })
	if !faulted {
		t.Errorf("write at offset %d of a %d-byte file: no SIGBUS", length-1, size)
	}
	if st := lstat(t, p); st.Size != size {
		t.Errorf("size after writes past EOF: %d, want %d", st.Size, size)
	}
	munmap(t, b)
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	checkBoth(t, m, "f", orig)
	// The daemon is still alive.
	writeFile(t, filepath.Join(m.mnt, "g"), []byte("alive"))
	checkBoth(t, m, "g", []byte("alive"))
}

// TestMmapGrowWithFtruncate grows a file with ftruncate and writes the new
// part through a shared mapping, as a logger that appends through a mapping
// does.
func TestMmapGrowWithFtruncate(t *testing.T) { forEachSwitchSet(t, mmapGrowWithFtruncate) }

func mmapGrowWithFtruncate(t *testing.T, m *mount) {
	for _, mapFirst := range []bool{false, true} {
		name := "TruncateThenMap"
		if mapFirst {
			name = "MapThenTruncate"
		}
		t.Run(name, func(t *testing.T) {
			log := "log-" + name
			p := filepath.Join(m.mnt, log)
			const oldSize, newSize = 5000, 3*4096 + 100
			want := pattern(oldSize, 23)
			writeFile(t, p, want)
			f := openRW(t, p)
			var b []byte
			if mapFirst {
				b = mmapFile(t, f, newSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			}
			if err := f.Truncate(newSize); err != nil {
				t.Fatalf("ftruncate to %d: %v", newSize, err)
			}
			if !mapFirst {
				b = mmapFile(t, f, newSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			}
			if !bytes.Equal(b[:oldSize], want) || !isZero(b[oldSize:]) {
				t.Errorf("mapping after the grow: old part %s, new part zero: %v", diffBytes(b[:oldSize], want), isZero(b[oldSize:]))
			}
			appended := pattern(newSize-oldSize, 24)
			copy(b[oldSize:], appended)
			want = append(want, appended...)
			if err := unix.Msync(b, unix.MS_SYNC); err != nil {
				t.Fatalf("msync: %v", err)
			}
			checkBoth(t, m, log, want)
			munmap(t, b)
			if err := f.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			checkBoth(t, m, log, want)
		})
	}
}

func TestMmapTwoMappings(t *testing.T) { forEachSwitchSet(t, mmapTwoMappings) }

func mmapTwoMappings(t *testing.T, m *mount) {
	p := filepath.Join(m.mnt, "f")
	want := pattern(20000, 25)
	writeFile(t, p, want)
	f1, f2 := openRW(t, p), openRW(t, p)
	b1 := mmapFile(t, f1, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	b2 := mmapFile(t, f2, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	copy(b1[100:], "one")
	copy(want[100:], "one")
	if !bytes.Equal(b2[100:103], []byte("one")) {
		t.Errorf("mapping 2 does not see the write through mapping 1: % x", b2[100:103])
	}
	copy(b2[12000:], "two")
	copy(want[12000:], "two")
	if !bytes.Equal(b1[12000:12003], []byte("two")) {
		t.Errorf("mapping 1 does not see the write through mapping 2: % x", b1[12000:12003])
	}
	for _, b := range [][]byte{b1, b2} {
		if err := unix.Msync(b, unix.MS_SYNC); err != nil {
			t.Fatalf("msync: %v", err)
		}
	}
	checkBoth(t, m, "f", want)
	// A write() shows in both mappings.
	if _, err := f1.WriteAt([]byte("three"), 7000); err != nil {
		t.Fatal(err)
	}
	copy(want[7000:], "three")
	if !bytes.Equal(b1, want) || !bytes.Equal(b2, want) {
		t.Errorf("mappings after write(): 1: %s; 2: %s", diffBytes(b1, want), diffBytes(b2, want))
	}
}
