package fs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/fs/wire"
)

// TestBDIStatsParse: a stats file captured from this machine's debugfs
// (the virtio disk 254:0) gives its figures in bytes; a file missing a
// figure or with a figure in another unit is an error naming it.
func TestBDIStatsParse(t *testing.T) {
	t.Parallel()
	f, err := os.Open("testdata/bdi-stats-254-0.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := parseBDIStats(f)
	if err != nil {
		t.Fatal(err)
	}
	want := bdiStats{writeback: 0, reclaimable: 260 << 10, bdiThresh: 3546600 << 10, dirtyThresh: 4803132 << 10,
		backgroundThresh: 2398632 << 10, dirtied: 212188140 << 10, written: 179603300 << 10, writeBandwidthPerS: 3552 << 10}
	if b != want {
		t.Errorf("parsed %+v, want %+v", b, want)
	}
	for _, tc := range []struct{ text, want string }{
		{"BdiWriteback: 8 kB\n", "no "},
		{"BdiWriteback: 8 pages\n", "BdiWriteback"},
		{"BdiWriteback: x kB\n", "BdiWriteback"},
	} {
		if _, err := parseBDIStats(strings.NewReader(tc.text)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error with %q", tc.text, err, tc.want)
		}
	}
}

// TestBDIVmstatParse: the fallback's thresholds, from a /proc/vmstat
// captured on this machine, are its page counts times the page size.
func TestBDIVmstatParse(t *testing.T) {
	t.Parallel()
	f, err := os.Open("testdata/bdi-vmstat.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bg, dirty, err := parseVmstatThresholds(f, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if bg != 574903*4096 || dirty != 1151212*4096 {
		t.Errorf("thresholds %d, %d; want %d, %d", bg, dirty, 574903*4096, 1151212*4096)
	}
	if _, _, err := parseVmstatThresholds(strings.NewReader("nr_dirty 3\n"), 4096); err == nil {
		t.Error("a vmstat without thresholds parsed")
	}
}

// fakeBDIs builds a debugfs, /sys/dev/block, /sys/class/bdi and vmstat
// under a temporary directory: the disk 254:0 with its bdi (and debugfs
// stats if withDebugfs), its partition 254:1, the FUSE bdi 0:50 (stats
// too), and the anonymous device 0:60 without a bdi.
func fakeBDIs(t *testing.T, withDebugfs bool) bdiPaths {
	t.Helper()
	dir := t.TempDir()
	p := bdiPaths{debugfs: filepath.Join(dir, "debug"), vmstat: filepath.Join(dir, "vmstat"),
		sysBlk: filepath.Join(dir, "dev", "block"), sysBDI: filepath.Join(dir, "class", "bdi")}
	stats, err := os.ReadFile("testdata/bdi-stats-254-0.txt")
	if err != nil {
		t.Fatal(err)
	}
	vmstat, err := os.ReadFile("testdata/bdi-vmstat.txt")
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(p.vmstat, vmstat, 0o644))
	for _, dev := range []string{"254:0", "0:50"} {
		must(os.MkdirAll(filepath.Join(p.sysBDI, dev), 0o755))
		if withDebugfs {
			must(os.MkdirAll(filepath.Join(p.debugfs, "bdi", dev), 0o755))
			must(os.WriteFile(filepath.Join(p.debugfs, "bdi", dev, "stats"), stats, 0o644))
		}
	}
	// sysfs: /sys/dev/block/254:0 is the disk, with its bdi link; the
	// partition is a directory inside it, reached by its own link.
	disk := filepath.Join(dir, "devices", "vda")
	must(os.MkdirAll(filepath.Join(disk, "vda1"), 0o755))
	must(os.Symlink(filepath.Join(p.sysBDI, "254:0"), filepath.Join(disk, "bdi")))
	must(os.MkdirAll(p.sysBlk, 0o755))
	must(os.Symlink(disk, filepath.Join(p.sysBlk, "254:0")))
	must(os.Symlink(filepath.Join(disk, "vda1"), filepath.Join(p.sysBlk, "254:1")))
	return p
}

// TestBDIStoreDevice: a store's st_dev leads to its disk's bdi (a
// partition's to its disk's), to its own bdi for a filesystem with one
// (FUSE), and to none for tmpfs and the like.
func TestBDIStoreDevice(t *testing.T) {
	t.Parallel()
	p := fakeBDIs(t, true)
	for dev, want := range map[uint64]string{
		unix.Mkdev(254, 0): "254:0",
		unix.Mkdev(254, 1): "254:0",
		unix.Mkdev(0, 50):  "0:50",
		unix.Mkdev(0, 60):  "",
	} {
		if got := p.storeBDI(dev); got != want {
			t.Errorf("%d:%d: bdi %q, want %q", unix.Major(dev), unix.Minor(dev), got, want)
		}
	}
}

// TestBDIMeasure: with debugfs, both devices' figures and the system's
// thresholds come from their stats files; without it, the thresholds
// come from vmstat, the devices' figures are 0 and the sources say why;
// a store without a bdi is "none".
func TestBDIMeasure(t *testing.T) {
	t.Parallel()
	var v wire.Values
	src := fakeBDIs(t, true).measureBDIs(&v, "0:50", "254:0", 4096)
	if src.Mount != (wire.BDISource{Device: "0:50", Source: wire.SourceDebugfs}) || src.Store != (wire.BDISource{Device: "254:0", Source: wire.SourceDebugfs}) {
		t.Errorf("sources %+v", *src)
	}
	for id, want := range map[wire.ID]int64{
		wire.MountBDIDirty: 260 << 10, wire.MountBDIWriteback: 0, wire.MountBDIThresh: 3546600 << 10,
		wire.MountBDIDirtied: 212188140 << 10, wire.MountBDIWritten: 179603300 << 10, wire.MountBDIBandwidth: 3552 << 10,
		wire.StoreBDIThresh: 3546600 << 10, wire.StoreBDIWritten: 179603300 << 10,
		wire.DirtyThresh: 4803132 << 10, wire.BackgroundThresh: 2398632 << 10,
	} {
		if got := v.Get(id); got != want {
			t.Errorf("%s: %d, want %d", id.Figure().Key, got, want)
		}
	}

	var fb wire.Values
	p := fakeBDIs(t, false)
	src = p.measureBDIs(&fb, "0:50", "", 4096)
	if src.Mount.Source != wire.SourceVmstat || src.Mount.Device != "0:50" || !strings.Contains(src.Mount.Note, "debugfs is not mounted (mount -t debugfs none "+p.debugfs+")") {
		t.Errorf("mount source without debugfs: %+v", src.Mount)
	}
	if src.Store.Source != wire.SourceNone || src.Store.Device != "" || !strings.Contains(src.Store.Note, "no backing device") {
		t.Errorf("store source without a bdi: %+v", src.Store)
	}
	if fb.Get(wire.DirtyThresh) != 1151212*4096 || fb.Get(wire.BackgroundThresh) != 574903*4096 {
		t.Errorf("thresholds from vmstat: %d, %d", fb.Get(wire.DirtyThresh), fb.Get(wire.BackgroundThresh))
	}
	if fb.Get(wire.MountBDIThresh) != 0 || fb.Get(wire.MountBDIDirtied) != 0 {
		t.Error("device figures set without debugfs")
	}

	p.vmstat = filepath.Join(p.vmstat, "missing")
	src = p.measureBDIs(&wire.Values{}, "0:50", "", 4096)
	if !strings.Contains(src.Mount.Note, "the thresholds: "+p.vmstat) {
		t.Errorf("an unreadable vmstat is not named: %+v", src.Mount)
	}
}
