package mmapcheck

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/integration/fsx"
	"github.com/mmapfs/mmapfs/integration/mapfault"
)

const (
	rw     = unix.PROT_READ | unix.PROT_WRITE
	shared = unix.MAP_SHARED
)

// guarantees are the checks, in the order they run.
var guarantees = []Guarantee{
	{Name: "shared-msync", shared: true, run: sharedMsync,
		Description: "MAP_SHARED stores reach read(2) after msync(MS_SYNC)"},
	{Name: "shared-two-mappings", shared: true, run: sharedTwoMappings,
		Description: "MAP_SHARED stores reach a second mapping through a second descriptor, both ways, and write(2) reaches both"},
	{Name: "shared-other-process", shared: true, run: sharedOtherProcess,
		Description: "MAP_SHARED stores reach another process (its read(2) and its mapping), and its stores reach us"},
	{Name: "fork", shared: true, run: forkShares,
		Description: "a child made by fork shares a MAP_SHARED mapping with its parent"},
	{Name: "private", run: private,
		Description: "MAP_PRIVATE stores never reach the file or another mapping"},
	{Name: "past-eof", run: pastEOF,
		Description: "a 5000-byte file mapped for 15000 bytes: its bytes, zeros to the end of its last page (stores there never reach the file), SIGBUS past it"},
	{Name: "grow-ftruncate", run: growFtruncate,
		Description: "a file grown with ftruncate and written through a mapping at its old end keeps the appended bytes"},
	{Name: "shrink-regrow", run: shrinkRegrow,
		Description: "a file shrunk while mapped gives SIGBUS past its new end; grown again it gives zeros, not the old bytes"},
	{Name: "write-coherence", run: writeCoherence,
		Description: "write(2) through the same descriptor, another one and a hard link is seen by an existing mapping"},
	{Name: "odirect", run: oDirect,
		Description: "O_DIRECT reads see mapped stores after msync(MS_SYNC)"},
	{Name: "msync-invalidate", run: msyncInvalidate,
		Description: "after msync(MS_INVALIDATE) a shared mapping shows the file (a write(2) through a hard link) and keeps its stores"},
	{Name: "msync-async", run: msyncAsync,
		Description: "stores msynced with MS_ASYNC reach read(2); a write(2) through a hard link reaches the mapping"},
	{Name: "madvise-dontneed", run: madviseDontneed,
		Description: "madvise(MADV_DONTNEED) on a shared file mapping rereads the file: its stores stay, a write(2) through a hard link shows"},
	{Name: "mremap-grow", run: mremapGrow,
		Description: "a shared mapping grown with mremap(MREMAP_MAYMOVE) maps the rest of the file, and its stores reach it"},
	{Name: "mmap-permissions", run: mmapPermissions,
		Description: "PROT_WRITE with MAP_SHARED on an O_RDONLY descriptor is EACCES, on an O_WRONLY one too; MAP_PRIVATE on O_RDONLY is allowed"},
	{Name: "fallocate", run: fallocateUnder,
		Description: "fallocate growing a mapped file: zeros in the mapping, stores there reach the file; KEEP_SIZE keeps the size"},
	{Name: "punch-hole", run: punchHole,
		Description: "a hole punched under a mapping reads as zeros through it, and stores into the hole reach the file"},
	{Name: "model", run: model,
		Description: "the fsx model run: random reads, writes, mapped reads and writes with msync, truncate, fallocate, punch hole, reopen against an in-memory model"},
	{Name: "remount", run: remount,
		Description: "msynced and fsynced data survive --remount COMMAND (an unmount and mount again)"},
}

// sharedMsync: stores through a shared mapping, msync(MS_SYNC), and the
// file has them (TestMmapSharedMsync).
func sharedMsync(e *env) error {
	want := e.pattern(3*4096+500, 20)
	if err := e.create("f", want); err != nil {
		return err
	}
	f, err := e.open("f", os.O_RDWR)
	if err != nil {
		return err
	}
	e.step("mmap f, %d bytes, MAP_SHARED", len(want))
	b, err := e.mmap(f, 0, len(want), rw, shared)
	if err != nil {
		return err
	}
	if err := e.mapped("the mapping", b, 0, want); err != nil {
		return err
	}
	for i, off := range []int{0, 4095, 4096, 9000, len(want) - 1} {
		if err := e.put("the mapping", b, off, []byte{byte(0xF0 + i)}); err != nil {
			return err
		}
		want[off] = byte(0xF0 + i)
	}
	msg := []byte("written through a shared mapping")
	if err := e.put("the mapping", b, 5000, msg); err != nil {
		return err
	}
	copy(want[5000:], msg)
	if err := e.msync(b, unix.MS_SYNC); err != nil {
		return err
	}
	e.step("pread f through the mapped descriptor")
	got, err := readAt(f, 0, len(want)+1)
	if err != nil {
		return fmt.Errorf("pread: %w", err)
	}
	if !bytes.Equal(got, want) {
		return e.fail("pread(2) through the mapped descriptor gives the stores after msync(MS_SYNC)", "%s", diffAt(0, got, want))
	}
	return e.verify("f", want, "after msync(MS_SYNC)")
}

// sharedTwoMappings: two shared mappings through two descriptors see each
// other's stores, and a write(2) shows in both (TestMmapTwoMappings).
func sharedTwoMappings(e *env) error {
	want := e.pattern(20000, 25)
	if err := e.create("f", want); err != nil {
		return err
	}
	f1, err := e.open("f", os.O_RDWR)
	if err != nil {
		return err
	}
	f2, err := e.open("f", os.O_RDWR)
	if err != nil {
		return err
	}
	e.step("mmap f twice, MAP_SHARED, through two descriptors")
	b1, err := e.mmap(f1, 0, len(want), rw, shared)
	if err != nil {
		return err
	}
	b2, err := e.mmap(f2, 0, len(want), rw, shared)
	if err != nil {
		return err
	}
	if err := e.put("mapping 1", b1, 100, []byte("one")); err != nil {
		return err
	}
	copy(want[100:], "one")
	if err := e.mapped("mapping 2 (after a store through mapping 1)", b2, 100, []byte("one")); err != nil {
		return err
	}
	if err := e.put("mapping 2", b2, 12000, []byte("two")); err != nil {
		return err
	}
	copy(want[12000:], "two")
	if err := e.mapped("mapping 1 (after a store through mapping 2)", b1, 12000, []byte("two")); err != nil {
		return err
	}
	for _, b := range [][]byte{b1, b2} {
		if err := e.msync(b, unix.MS_SYNC); err != nil {
			return err
		}
	}
	if err := e.verify("f", want, "after msync of both mappings"); err != nil {
		return err
	}
	e.step("write(2) 5 bytes at 7000 through descriptor 1")
	if _, err := f1.WriteAt([]byte("three"), 7000); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	copy(want[7000:], "three")
	if err := e.mapped("mapping 1 after write(2)", b1, 0, want); err != nil {
		return err
	}
	return e.mapped("mapping 2 after write(2)", b2, 0, want)
}

// sharedOtherProcess: another process sees our msynced stores through
// read(2) and through a mapping of its own, and its stores reach ours.
func sharedOtherProcess(e *env) error {
	if e.cfg.Peer == nil {
		return &notApplicable{"no way to run another process was given"}
	}
	want := e.pattern(3*4096+100, 26)
	_, b, err := e.sharedFile("f", want, len(want))
	if err != nil {
		return err
	}
	ours := []byte("stored by the checking process")
	if err := e.put("our mapping", b, 5000, ours); err != nil {
		return err
	}
	copy(want[5000:], ours)
	if err := e.msync(b, unix.MS_SYNC); err != nil {
		return err
	}
	theirs := e.pattern(64, 27)
	e.step("another process reads 5000.. through read(2) and its own mapping, stores 64 bytes at 9000 through its mapping and msyncs")
	out, err := runPeer(e.cfg.Peer, e.path("f"), []peerItem{{read: true, off: 5000, data: ours}, {off: 9000, data: theirs}})
	if err != nil {
		var pf *peerFailure
		if errors.As(err, &pf) {
			return e.fail("the other process sees our stores and can store", "%s", pf.msg)
		}
		return fmt.Errorf("running the other process: %w (its output: %q)", err, out)
	}
	copy(want[9000:], theirs)
	if err := e.mapped("our mapping (after the other process's store)", b, 9000, theirs); err != nil {
		return err
	}
	return e.verify("f", want, "after the other process's msync")
}

// forkShares: a forked child sees the parent's stores in the mapping it
// inherits, and the parent sees the child's.
func forkShares(e *env) error {
	want := e.pattern(2*4096, 28)
	_, b, err := e.sharedFile("f", want, len(want))
	if err != nil {
		return err
	}
	a, c := want[10]^0x5A, want[4200]^0xA5
	if err := e.put("the mapping", b, 10, []byte{a}); err != nil {
		return err
	}
	want[10] = a
	e.step("fork: the child checks byte 10 of the mapping and stores byte 4200")
	status, err := forkAndStore(b, 10, a, 4200, c)
	if err != nil {
		return fmt.Errorf("fork: %w", err)
	}
	if status == forkSawOld {
		return e.fail("the forked child sees the parent's store in the mapping it inherits", "the child read the file's old byte")
	}
	if status != 0 {
		return e.fail("the forked child exits 0", "it ended with status %#x", status)
	}
	want[4200] = c
	if err := e.mapped("the parent's mapping (after the child's store)", b, 4200, []byte{c}); err != nil {
		return err
	}
	if err := e.msync(b, unix.MS_SYNC); err != nil {
		return err
	}
	return e.verify("f", want, "after the child's store and msync(MS_SYNC)")
}

// private: MAP_PRIVATE stores stay in the mapping (TestMmapPrivate).
func private(e *env) error {
	orig := e.pattern(10000, 21)
	if err := e.create("f", orig); err != nil {
		return err
	}
	f, err := e.open("f", os.O_RDWR)
	if err != nil {
		return err
	}
	e.step("mmap f MAP_PRIVATE, and MAP_SHARED")
	priv, err := e.mmap(f, 0, len(orig), rw, unix.MAP_PRIVATE)
	if err != nil {
		return err
	}
	sh, err := e.mmap(f, 0, len(orig), unix.PROT_READ, shared)
	var rf *refusedError
	if errors.As(err, &rf) {
		sh = nil // checked against read(2) only
	} else if err != nil {
		return err
	}
	if err := e.put("the private mapping", priv, 100, []byte("private write")); err != nil {
		return err
	}
	if err := e.put("the private mapping", priv, 9999, []byte{^orig[9999]}); err != nil {
		return err
	}
	if err := e.mapped("the private mapping", priv, 100, []byte("private write")); err != nil {
		return err
	}
	e.step("msync(MS_SYNC) of the private mapping")
	if err := unix.Msync(priv, unix.MS_SYNC); err != nil {
		return e.fail("msync of a private mapping succeeds", "%s", errnoText(err))
	}
	if sh != nil {
		if err := e.mapped("a shared mapping (after private stores)", sh, 0, orig); err != nil {
			return err
		}
	}
	if err := e.verify("f", orig, "after stores through a private mapping"); err != nil {
		return err
	}
	e.step("munmap the private mapping, close")
	if err := e.munmap(priv); err != nil {
		return err
	}
	if err := e.closeFile(f); err != nil {
		return err
	}
	return e.verify("f", orig, "after the private mapping is gone")
}

// pastEOF: a 5000-byte file mapped for 15000 bytes (TestMmapPastEOF).
func pastEOF(e *env) error {
	const size, length = 5000, 15000
	orig := e.pattern(size, 22)
	if err := e.create("f", orig); err != nil {
		return err
	}
	f, err := e.open("f", os.O_RDWR)
	if err != nil {
		return err
	}
	e.step("mmap the %d-byte f for %d bytes, MAP_SHARED", size, length)
	b, err := e.mmap(f, 0, length, rw, shared)
	if err != nil {
		return err
	}
	if err := e.mapped("the mapping", b, 0, orig); err != nil {
		return err
	}
	e.step("read bytes %d..8191 (past EOF, in the last page)", size)
	tail, faulted := load(b, size, 8192-size)
	if faulted {
		return e.fail(fmt.Sprintf("bytes %d..8191 (the rest of the last page) readable", size), "SIGBUS")
	}
	if !isZero(tail) {
		return e.fail(fmt.Sprintf("bytes %d..8191 (past EOF in the last page) are zero", size), "%s", diffAt(size, tail, make([]byte, len(tail))))
	}
	if err := e.put("the mapping (past EOF, in the last page)", b, 6000, []byte("beyond EOF")); err != nil {
		return err
	}
	if err := e.put("the mapping (past EOF, in the last page)", b, 8191, []byte{0xFF}); err != nil {
		return err
	}
	if err := e.msync(b[:8192], unix.MS_SYNC); err != nil {
		return err
	}
	e.step("read offset 8192 (page 2, wholly past EOF)")
	var got byte
	if faulted, _ := mapfault.Catch(func() { got = b[8192] }); !faulted {
		return e.fail(fmt.Sprintf("SIGBUS reading offset 8192 of a %d-byte file", size), "read %#x", got)
	}
	e.step("write offset %d (past EOF)", length-1)
	if faulted, _ := mapfault.Catch(func() { b[length-1] = 1 }); !faulted {
		return e.fail(fmt.Sprintf("SIGBUS writing offset %d of a %d-byte file", length-1, size), "no fault")
	}
	e.step("fstat f")
	if st, err := f.Stat(); err != nil {
		return fmt.Errorf("fstat: %w", err)
	} else if st.Size() != size {
		return e.fail(fmt.Sprintf("size %d after stores past EOF", size), "size %d", st.Size())
	}
	if err := e.munmap(b); err != nil {
		return err
	}
	if err := e.closeFile(f); err != nil {
		return err
	}
	if err := e.verify("f", orig, "after stores past EOF"); err != nil {
		return err
	}
	// The filesystem still answers.
	if err := e.create("g", []byte("alive")); err != nil {
		return err
	}
	return e.verify("g", []byte("alive"), "after the faults")
}

// growFtruncate: a file grown by ftruncate and appended to through a
// mapping, mapped before or after the grow (TestMmapGrowWithFtruncate).
func growFtruncate(e *env) error {
	for i, mapFirst := range []bool{false, true} {
		name := "log-TruncateThenMap"
		if mapFirst {
			name = "log-MapThenTruncate"
		}
		const oldSize, newSize = 5000, 3*4096 + 100
		want := e.pattern(oldSize, uint64(23+10*i))
		if err := e.create(name, want); err != nil {
			return err
		}
		f, err := e.open(name, os.O_RDWR)
		if err != nil {
			return err
		}
		var b []byte
		if mapFirst {
			e.step("mmap %s for %d bytes before the grow", name, newSize)
			if b, err = e.mmap(f, 0, newSize, rw, shared); err != nil {
				return err
			}
		}
		e.step("ftruncate %s to %d", name, newSize)
		if err := f.Truncate(newSize); err != nil {
			return e.fail(fmt.Sprintf("ftruncate to %d succeeds", newSize), "%s", errnoText(err))
		}
		if !mapFirst {
			e.step("mmap %s for %d bytes after the grow", name, newSize)
			if b, err = e.mmap(f, 0, newSize, rw, shared); err != nil {
				return err
			}
		}
		if err := e.mapped("the mapping after the grow", b, 0, want); err != nil {
			return err
		}
		if err := e.mapped("the grown part of the mapping (zeros)", b, oldSize, make([]byte, newSize-oldSize)); err != nil {
			return err
		}
		appended := e.pattern(newSize-oldSize, uint64(24+10*i))
		if err := e.put("the mapping, at the old end", b, oldSize, appended); err != nil {
			return err
		}
		want = append(want, appended...)
		if err := e.msync(b, unix.MS_SYNC); err != nil {
			return err
		}
		if err := e.verify(name, want, "after the appended stores and msync"); err != nil {
			return err
		}
		if err := e.munmap(b); err != nil {
			return err
		}
		if err := e.closeFile(f); err != nil {
			return err
		}
		if err := e.verify(name, want, "after munmap and close"); err != nil {
			return err
		}
	}
	return nil
}

// shrinkRegrow: SIGBUS past the new end of a file shrunk under its
// mapping, zeros (not the old bytes) when it grows again.
func shrinkRegrow(e *env) error {
	const size, small = 3*4096 + 100, 5000
	want := e.pattern(size, 30)
	if err := e.create("f", want); err != nil {
		return err
	}
	f, err := e.open("f", os.O_RDWR)
	if err != nil {
		return err
	}
	e.step("mmap f, %d bytes, MAP_SHARED", size)
	b, err := e.mmap(f, 0, size, rw, shared)
	if err != nil {
		return err
	}
	if err := e.mapped("the mapping", b, 0, want); err != nil {
		return err
	}
	e.step("ftruncate f to %d while mapped", small)
	if err := f.Truncate(small); err != nil {
		return e.fail(fmt.Sprintf("ftruncate to %d succeeds", small), "%s", errnoText(err))
	}
	if err := e.mapped("the mapping after the shrink", b, 0, want[:small]); err != nil {
		return err
	}
	if err := e.mapped(fmt.Sprintf("the rest of the last page after the shrink (zeros, %d..8191)", small), b, small, make([]byte, 8192-small)); err != nil {
		return err
	}
	for _, off := range []int{8192, size - 1} {
		e.step("read offset %d (past the new end)", off)
		var got byte
		if faulted, _ := mapfault.Catch(func() { got = b[off] }); !faulted {
			return e.fail(fmt.Sprintf("SIGBUS reading offset %d of a file shrunk to %d", off, small), "read %#x", got)
		}
	}
	e.step("ftruncate f back to %d", size)
	if err := f.Truncate(size); err != nil {
		return e.fail(fmt.Sprintf("ftruncate to %d succeeds", size), "%s", errnoText(err))
	}
	if err := e.mapped("the mapping after growing again (zeros, not the old bytes)", b, small, make([]byte, size-small)); err != nil {
		return err
	}
	return e.verify("f", append(want[:small:small], make([]byte, size-small)...), "after the shrink and the grow")
}

// behind writes data at off of name (which e has mapped) through a way
// that is not the mapping's descriptor: a hard link when the filesystem
// makes them, another descriptor otherwise. It says which.
func (e *env) behind(name string, off int64, data []byte) (string, error) {
	link := name + "-link"
	how := "a hard link"
	if _, err := os.Lstat(e.path(link)); err != nil {
		e.step("link %s to %s", name, link)
		if err := os.Link(e.path(name), e.path(link)); err != nil {
			link, how = name, "another descriptor (link(2) refused: "+errnoText(errors.Unwrap(err))+")"
			e.notes = append(e.notes, "the filesystem refuses hard links ("+errnoText(errors.Unwrap(err))+"): the write(2) behind the mapping went through another descriptor")
		}
	}
	e.step("write(2) %d bytes at %d through %s", len(data), off, how)
	f, err := os.OpenFile(e.path(link), os.O_RDWR, 0)
	if err != nil {
		return how, fmt.Errorf("opening %s: %w", link, err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		return how, fmt.Errorf("write through %s: %w", how, err)
	}
	return how, nil
}

// writeCoherence: write(2) through the mapped descriptor, another
// descriptor and a hard link shows in an existing mapping.
func writeCoherence(e *env) error {
	want := e.pattern(20000, 31)
	if err := e.create("f", want); err != nil {
		return err
	}
	f, err := e.open("f", os.O_RDWR)
	if err != nil {
		return err
	}
	e.step("mmap f, MAP_SHARED")
	b, err := e.mmap(f, 0, len(want), unix.PROT_READ, shared)
	if err != nil {
		return err
	}
	if err := e.mapped("the mapping", b, 0, want); err != nil {
		return err
	}
	d1 := e.pattern(300, 32)
	e.step("write(2) 300 bytes at 1000 through the mapped descriptor")
	if _, err := f.WriteAt(d1, 1000); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := e.mapped("the mapping after write(2) through its descriptor", b, 1000, d1); err != nil {
		return err
	}
	copy(want[1000:], d1)
	g, err := e.open("f", os.O_RDWR)
	if err != nil {
		return err
	}
	d2 := e.pattern(300, 33)
	e.step("write(2) 300 bytes at 7000 through another descriptor")
	if _, err := g.WriteAt(d2, 7000); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := e.mapped("the mapping after write(2) through another descriptor", b, 7000, d2); err != nil {
		return err
	}
	copy(want[7000:], d2)
	d3 := e.pattern(300, 34)
	how, err := e.behind("f", 13000, d3)
	if err != nil {
		return err
	}
	if err := e.mapped("the mapping after write(2) through "+how, b, 13000, d3); err != nil {
		return err
	}
	copy(want[13000:], d3)
	return e.verify("f", want, "after the writes")
}

// oDirect: O_DIRECT reads see stores msynced through a mapping.
func oDirect(e *env) error {
	const size = 3 * 4096
	want := e.pattern(size, 40)
	_, b, err := e.sharedFile("f", want, size)
	if err != nil {
		return err
	}
	d := e.pattern(4096+50, 41)
	if err := e.put("the mapping", b, 4000, d); err != nil {
		return err
	}
	copy(want[4000:], d)
	if err := e.msync(b, unix.MS_SYNC); err != nil {
		return err
	}
	e.step("open f O_DIRECT")
	fd, err := unix.Open(e.path("f"), unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return &notApplicable{"the filesystem refuses O_DIRECT: open(O_DIRECT): " + errnoText(err)}
	}
	if err != nil {
		return fmt.Errorf("open(O_DIRECT): %w", err)
	}
	defer unix.Close(fd)
	// An aligned buffer: anonymous memory, which cannot fault.
	buf, err := unix.Mmap(-1, 0, size, rw, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("allocating an aligned buffer: %w", err)
	}
	defer unix.Munmap(buf)
	e.step("pread %d bytes at 0 with O_DIRECT", size)
	n, err := unix.Pread(fd, buf, 0)
	if errors.Is(err, unix.EINVAL) {
		return &notApplicable{"the filesystem refuses O_DIRECT reads: pread: " + errnoText(err)}
	}
	if err != nil {
		return e.fail("an O_DIRECT read succeeds", "%s", errnoText(err))
	}
	if !bytes.Equal(buf[:n], want) {
		return e.fail("an O_DIRECT read gives the stores msynced through the mapping", "%s", diffAt(0, buf[:n], want))
	}
	return nil
}

// mappedWithStore maps a fresh file f for the msync and madvise checks,
// stores into it at 200 (no msync) and returns the mapping and the
// content f must have.
func (e *env) mappedWithStore(k uint64) ([]byte, []byte, error) {
	want := e.pattern(3*4096+100, k)
	if err := e.create("f", want); err != nil {
		return nil, nil, err
	}
	f, err := e.open("f", os.O_RDWR)
	if err != nil {
		return nil, nil, err
	}
	e.step("mmap f, MAP_SHARED")
	b, err := e.mmap(f, 0, len(want), rw, shared)
	if err != nil {
		return nil, nil, err
	}
	if err := e.mapped("the mapping", b, 0, want); err != nil {
		return nil, nil, err
	}
	s := e.pattern(100, k+1)
	if err := e.put("the mapping", b, 200, s); err != nil {
		return nil, nil, err
	}
	copy(want[200:], s)
	return b, want, nil
}

// msyncInvalidate: MS_INVALIDATE keeps the mapping's stores and shows the
// file.
func msyncInvalidate(e *env) error {
	b, want, err := e.mappedWithStore(50)
	if err != nil {
		return err
	}
	d := e.pattern(200, 52)
	how, err := e.behind("f", 6000, d)
	if err != nil {
		return err
	}
	copy(want[6000:], d)
	if err := e.msync(b, unix.MS_INVALIDATE); err != nil {
		return err
	}
	if err := e.mapped("the mapping after msync(MS_INVALIDATE) (its own stores)", b, 200, want[200:300]); err != nil {
		return err
	}
	if err := e.mapped("the mapping after msync(MS_INVALIDATE) (a write(2) through "+how+")", b, 6000, d); err != nil {
		return err
	}
	if err := e.msync(b, unix.MS_SYNC); err != nil {
		return err
	}
	return e.verify("f", want, "after msync(MS_INVALIDATE) and msync(MS_SYNC)")
}

// msyncAsync: MS_ASYNC stores reach read(2), and a write(2) the mapping.
func msyncAsync(e *env) error {
	b, want, err := e.mappedWithStore(60)
	if err != nil {
		return err
	}
	if err := e.msync(b, unix.MS_ASYNC); err != nil {
		return err
	}
	if err := e.verify("f", want, "after msync(MS_ASYNC)"); err != nil {
		return err
	}
	d := e.pattern(200, 62)
	how, err := e.behind("f", 9000, d)
	if err != nil {
		return err
	}
	copy(want[9000:], d)
	if err := e.msync(b, unix.MS_ASYNC); err != nil {
		return err
	}
	return e.mapped("the mapping after a write(2) through "+how+" and msync(MS_ASYNC)", b, 0, want)
}

// madviseDontneed: MADV_DONTNEED drops the mapping's pages; touched
// again they come from the file, with the mapping's stores in it.
func madviseDontneed(e *env) error {
	b, want, err := e.mappedWithStore(70)
	if err != nil {
		return err
	}
	e.step("madvise(MADV_DONTNEED) the whole mapping")
	if err := unix.Madvise(b, unix.MADV_DONTNEED); err != nil {
		return e.fail("madvise(MADV_DONTNEED) succeeds", "%s", errnoText(err))
	}
	if err := e.mapped("the mapping after MADV_DONTNEED (its stores, never msynced)", b, 0, want); err != nil {
		return err
	}
	d := e.pattern(200, 72)
	how, err := e.behind("f", 9000, d)
	if err != nil {
		return err
	}
	copy(want[9000:], d)
	e.step("madvise(MADV_DONTNEED) the whole mapping")
	if err := unix.Madvise(b, unix.MADV_DONTNEED); err != nil {
		return e.fail("madvise(MADV_DONTNEED) succeeds", "%s", errnoText(err))
	}
	if err := e.mapped("the mapping after a write(2) through "+how+" and MADV_DONTNEED", b, 0, want); err != nil {
		return err
	}
	if err := e.msync(b, unix.MS_SYNC); err != nil {
		return err
	}
	return e.verify("f", want, "after MADV_DONTNEED and msync(MS_SYNC)")
}

// mremapGrow: a one-page mapping grown with mremap maps the rest.
func mremapGrow(e *env) error {
	const size = 3*4096 + 100
	want := e.pattern(size, 80)
	if err := e.create("f", want); err != nil {
		return err
	}
	f, err := e.open("f", os.O_RDWR)
	if err != nil {
		return err
	}
	e.step("mmap the first page of f, MAP_SHARED")
	b, err := e.mmap(f, 0, 4096, rw, shared)
	if err != nil {
		return err
	}
	if err := e.put("the one-page mapping", b, 10, []byte("before mremap")); err != nil {
		return err
	}
	copy(want[10:], "before mremap")
	e.step("mremap the mapping to %d bytes (MREMAP_MAYMOVE)", size)
	nb, err := unix.Mremap(b, size, unix.MREMAP_MAYMOVE)
	if err != nil {
		return e.fail("mremap(MREMAP_MAYMOVE) of a shared file mapping succeeds", "%s", errnoText(err))
	}
	e.replaceMap(b, nb)
	if err := e.mapped("the grown mapping", nb, 0, want); err != nil {
		return err
	}
	if err := e.put("the grown mapping", nb, 2*4096+5, []byte("after mremap")); err != nil {
		return err
	}
	copy(want[2*4096+5:], "after mremap")
	if err := e.msync(nb, unix.MS_SYNC); err != nil {
		return err
	}
	return e.verify("f", want, "after stores through the grown mapping")
}

// mmapPermissions: the access mode of the descriptor bounds the mapping.
func mmapPermissions(e *env) error {
	want := e.pattern(8192, 90)
	if err := e.create("f", want); err != nil {
		return err
	}
	for _, c := range []struct {
		flag  int
		fname string
		prot  int
	}{
		{os.O_RDONLY, "O_RDONLY", rw},
		{os.O_RDONLY, "O_RDONLY", unix.PROT_WRITE},
		{os.O_WRONLY, "O_WRONLY", rw},
		{os.O_WRONLY, "O_WRONLY", unix.PROT_WRITE},
	} {
		f, err := e.open("f", c.flag)
		if err != nil {
			return err
		}
		e.step("mmap(%s, MAP_SHARED) on an %s descriptor", protText(c.prot), c.fname)
		b, err := unix.Mmap(int(f.Fd()), 0, 8192, c.prot, shared)
		if err == nil {
			unix.Munmap(b) //nolint:errcheck // the failure is what is reported
			return e.fail(fmt.Sprintf("mmap(%s, MAP_SHARED) on an %s descriptor is EACCES", protText(c.prot), c.fname), "it succeeded")
		}
		if !errors.Is(err, unix.EACCES) {
			return e.fail(fmt.Sprintf("mmap(%s, MAP_SHARED) on an %s descriptor is EACCES", protText(c.prot), c.fname), "%s", errnoText(err))
		}
		if err := e.closeFile(f); err != nil {
			return err
		}
	}
	f, err := e.open("f", os.O_RDONLY)
	if err != nil {
		return err
	}
	e.step("mmap(PROT_READ|PROT_WRITE, MAP_PRIVATE) on an O_RDONLY descriptor")
	b, err := unix.Mmap(int(f.Fd()), 0, 8192, rw, unix.MAP_PRIVATE)
	if err != nil {
		return e.fail("mmap(PROT_READ|PROT_WRITE, MAP_PRIVATE) on an O_RDONLY descriptor succeeds", "%s", errnoText(err))
	}
	e.maps = append(e.maps, b)
	if err := e.put("the private mapping", b, 0, []byte("private")); err != nil {
		return err
	}
	return e.verify("f", want, "after stores through a private mapping of an O_RDONLY descriptor")
}

// fallocateUnder: fallocate growing a mapped file.
func fallocateUnder(e *env) error {
	const size, grown = 5000, 3*4096 + 100
	want := e.pattern(size, 100)
	if err := e.create("f", want); err != nil {
		return err
	}
	f, err := e.open("f", os.O_RDWR)
	if err != nil {
		return err
	}
	e.step("mmap f for %d bytes, MAP_SHARED", grown)
	b, err := e.mmap(f, 0, grown, rw, shared)
	if err != nil {
		return err
	}
	if err := e.mapped("the mapping", b, 0, want); err != nil {
		return err
	}
	e.step("fallocate(mode 0, 0, %d)", grown)
	if err := unix.Fallocate(int(f.Fd()), 0, 0, grown); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
			return &notApplicable{"the filesystem does not allocate: fallocate: " + errnoText(err)}
		}
		return e.fail("fallocate(mode 0) succeeds", "%s", errnoText(err))
	}
	if err := e.mapped("the allocated part of the mapping (zeros)", b, size, make([]byte, grown-size)); err != nil {
		return err
	}
	d := e.pattern(300, 101)
	if err := e.put("the allocated part of the mapping", b, 2*4096+1, d); err != nil {
		return err
	}
	want = append(want, make([]byte, grown-size)...)
	copy(want[2*4096+1:], d)
	if err := e.msync(b, unix.MS_SYNC); err != nil {
		return err
	}
	if err := e.verify("f", want, "after fallocate and stores"); err != nil {
		return err
	}
	e.step("fallocate(KEEP_SIZE, 0, %d)", 8*4096)
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, 8*4096); err != nil {
		return e.fail("fallocate(KEEP_SIZE) succeeds where mode 0 does", "%s", errnoText(err))
	}
	if err := e.mapped("the mapping after fallocate(KEEP_SIZE)", b, 0, want); err != nil {
		return err
	}
	return e.verify("f", want, "after fallocate(KEEP_SIZE)")
}

// punchHole: a hole punched under a mapping.
func punchHole(e *env) error {
	const size = 4 * 4096
	want := e.pattern(size, 110)
	f, b, err := e.sharedFile("f", want, size)
	if err != nil {
		return err
	}
	if err := e.mapped("the mapping", b, 0, want); err != nil {
		return err
	}
	for _, h := range []struct{ off, n int }{{4096, 2 * 4096}, {100, 50}, {3*4096 + 4000, 96}} {
		e.step("fallocate(PUNCH_HOLE|KEEP_SIZE, %d, %d)", h.off, h.n)
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(h.off), int64(h.n)); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
				return &notApplicable{"the filesystem does not punch holes: fallocate(PUNCH_HOLE): " + errnoText(err)}
			}
			return e.fail("fallocate(PUNCH_HOLE|KEEP_SIZE) succeeds", "%s", errnoText(err))
		}
		clear(want[h.off : h.off+h.n])
		if err := e.mapped(fmt.Sprintf("the mapping after the punch at %d..%d", h.off, h.off+h.n), b, 0, want); err != nil {
			return err
		}
	}
	d := []byte("stored into the hole")
	if err := e.put("the mapping (into the hole)", b, 5000, d); err != nil {
		return err
	}
	copy(want[5000:], d)
	if err := e.msync(b, unix.MS_SYNC); err != nil {
		return err
	}
	e.step("fstat f")
	if st, err := f.Stat(); err != nil {
		return fmt.Errorf("fstat: %w", err)
	} else if st.Size() != size {
		return e.fail(fmt.Sprintf("size %d after punching holes with KEEP_SIZE", size), "size %d", st.Size())
	}
	return e.verify("f", want, "after the punches and a store into the hole")
}

// model runs the fsx checker on two files for cfg.Ops operations.
func model(e *env) error {
	// What the model needs, asked first: a refusal is a finding, not a
	// failure of the model.
	if err := e.create("probe", make([]byte, 8192)); err != nil {
		return err
	}
	f, err := e.open("probe", os.O_RDWR)
	if err != nil {
		return err
	}
	e.step("mmap a probe file, MAP_SHARED")
	if _, err := e.mmap(f, 0, 8192, rw, shared); err != nil {
		return err
	}
	for _, mode := range []uint32{0, unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE} {
		e.step("fallocate(mode %#x) the probe file", mode)
		if err := unix.Fallocate(int(f.Fd()), mode, 0, 4096); errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
			return &notApplicable{fmt.Sprintf("the model run needs fallocate and hole punching: fallocate(mode %#x): %s", mode, errnoText(err))}
		}
	}
	e.closeAll()
	x, err := fsx.New(fsx.Config{
		Name:           "model",
		Dir:            e.dir,
		Files:          2,
		Ops:            e.cfg.Ops,
		Seed:           e.seed,
		WritebackCache: e.cfg.WritebackCache,
	}, fsx.Hooks{})
	if err != nil {
		return fmt.Errorf("model: %w", err)
	}
	e.step("the model run, %d operations", e.cfg.Ops)
	if err := x.Run(); err != nil {
		msg := err.Error()
		first, _, _ := strings.Cut(msg, "\n")
		var step int
		if i := strings.Index(msg, "at step "); i >= 0 {
			fmt.Sscanf(msg[i:], "at step %d", &step)
		}
		e.stepNo, e.stepName = step, "an operation of the model run (the first line of the details)"
		return &failure{expected: "every step of the model run agrees with the in-memory model", seen: first, details: msg}
	}
	return nil
}

// remount: msynced and fsynced data survive an unmount and a mount.
func remount(e *env) error {
	if e.cfg.Remount == nil {
		return &notApplicable{"no --remount COMMAND was given"}
	}
	files := map[string][]byte{}
	// Stores through a mapping, msync(MS_SYNC); stores through a
	// mapping, fsync; write(2), fsync.
	for i, name := range []string{"mapped-msync", "mapped-fsync", "written-fsync"} {
		want := e.pattern(3*4096+100, uint64(120+i))
		if err := e.create(name, make([]byte, len(want))); err != nil {
			return err
		}
		f, err := e.open(name, os.O_RDWR)
		if err != nil {
			return err
		}
		if name == "written-fsync" {
			e.step("write(2) %s", name)
			if _, err := f.WriteAt(want, 0); err != nil {
				return fmt.Errorf("write: %w", err)
			}
		} else {
			e.step("mmap %s, MAP_SHARED", name)
			b, err := e.mmap(f, 0, len(want), rw, shared)
			if err != nil {
				return err
			}
			if err := e.put("the mapping", b, 0, want); err != nil {
				return err
			}
			if name == "mapped-msync" {
				if err := e.msync(b, unix.MS_SYNC); err != nil {
					return err
				}
			}
			if err := e.munmap(b); err != nil {
				return err
			}
		}
		if name != "mapped-msync" {
			e.step("fsync %s", name)
			if err := f.Sync(); err != nil {
				return e.fail("fsync succeeds", "%s", errnoText(err))
			}
		}
		if err := e.closeFile(f); err != nil {
			return err
		}
		files[name] = want
	}
	e.step("run the remount command")
	if err := e.cfg.Remount(); err != nil {
		return e.fail("the remount command succeeds", "%v", err)
	}
	for _, name := range []string{"mapped-msync", "mapped-fsync", "written-fsync"} {
		if err := e.verify(name, files[name], "after the remount"); err != nil {
			return err
		}
	}
	return nil
}
