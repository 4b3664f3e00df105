package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs/wire"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/ from what the code gives now")

// golden compares got with the file testdata/name (or, with -update,
// rewrites the file).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// testMountState is the state of a mount of a new store in a temporary
// directory, with the store's options opts, never mounted: enough for the
// stats, the metrics and the control requests.
func testMountState(t *testing.T, opts backing.Options) *mountState {
	t.Helper()
	st, err := backing.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing the store: %v", err)
		}
	})
	return &mountState{
		store:   st,
		opts:    Options{Store: opts},
		log:     log.New(io.Discard, "", 0),
		started: time.Now(),
		cut:     powerCut{done: make(chan struct{})},
	}
}

// keyPaths lists the keys of the JSON document raw in order, one line
// each: its path from the top (a.b for key b of object a, a[] for the
// elements of array a) and the kind of its value.
func keyPaths(t *testing.T, raw []byte) []byte {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var out bytes.Buffer
	var walk func(path string)
	walk = func(path string) {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("%s: %v\n%s", path, err, raw)
		}
		kind := "null"
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' {
				fmt.Fprintf(&out, "%s object\n", path)
				for d.More() {
					k, err := d.Token()
					if err != nil {
						t.Fatal(err)
					}
					walk(strings.TrimPrefix(path+"."+k.(string), "."))
				}
			} else {
				fmt.Fprintf(&out, "%s array\n", path)
				for d.More() {
					walk(path + "[]")
				}
			}
			if _, err := d.Token(); err != nil {
				t.Fatal(err)
			}
			return
		case json.Number:
			kind = "number"
		case string:
			kind = "string"
		case bool:
			kind = "bool"
		}
		fmt.Fprintf(&out, "%s %s\n", path, kind)
	}
	walk("")
	return out.Bytes()
}

// TestStatsFileGolden: the stats file of a mount has exactly the keys of
// testdata/stats-keys, in that order, with values of those kinds; under
// the power-cut simulation the powercut_sim object is there too.
func TestStatsFileGolden(t *testing.T) {
	t.Parallel()
	m := testMountState(t, backing.Options{PowerCutSim: true})
	m.stats.done(opLookup, time.Now(), fuse.OK)
	m.stats.done(opLookup, time.Now(), fuse.ENOENT)
	raw, err := m.statsJSON()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "stats-keys", keyPaths(t, raw))
}

// TestMetricsGolden: the mount's collector has exactly the metric families
// of testdata/metrics (name, type, labels and help).
func TestMetricsGolden(t *testing.T) {
	t.Parallel()
	m := testMountState(t, backing.Options{})
	m.stats.done(opLookup, time.Now(), fuse.OK)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(&collector{m: m, mountpoint: "/mnt"}); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, f := range fams {
		labels := map[string]bool{}
		for _, mt := range f.GetMetric() {
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		names := make([]string, 0, len(labels))
		for l := range labels {
			names = append(names, l)
		}
		sort.Strings(names)
		fmt.Fprintf(&out, "%s %s {%s} %s\n", f.GetName(), f.GetType(), strings.Join(names, ","), f.GetHelp())
	}
	golden(t, "metrics", out.Bytes())
}

// TestStatsFileOpen: the stats file opens for reading only, renders the
// figures at the open (later figures do not change what that descriptor
// reads) and cannot be changed.
func TestStatsFileOpen(t *testing.T) {
	t.Parallel()
	m := testMountState(t, backing.Options{})
	sn := &statsNode{virtualFile{m: m, ino: statsIno, perm: 0o444}}
	for name, flags := range map[string]uint32{"write only": syscall.O_WRONLY, "read-write": syscall.O_RDWR, "truncating": syscall.O_RDONLY | syscall.O_TRUNC} {
		if _, _, errno := sn.Open(context.Background(), flags); errno != syscall.EACCES {
			t.Errorf("open %s: %v, want EACCES", name, errno)
		}
	}
	fh, fl, errno := sn.Open(context.Background(), syscall.O_RDONLY)
	if errno != 0 || fl&fuse.FOPEN_DIRECT_IO == 0 {
		t.Fatalf("open for reading: %v, flags %#x", errno, fl)
	}
	m.stats.bytesRead.Add(12345)
	h := fh.(*statsHandle)
	var got []byte
	for off := int64(0); ; {
		res, errno := h.Read(context.Background(), make([]byte, 100), off)
		if errno != 0 {
			t.Fatal(errno)
		}
		chunk, _ := res.Bytes(make([]byte, 100))
		if len(chunk) == 0 {
			break
		}
		got, off = append(got, chunk...), off+int64(len(chunk))
	}
	var s wire.Snapshot
	if err := json.Unmarshal(got, &s); err != nil || s.Store != m.store.Root() || s.Figures.Get(wire.BytesRead) != 0 {
		t.Errorf("read in pieces: %v, store %q, bytes_read %d; want the figures of the open", err, s.Store, s.Figures.Get(wire.BytesRead))
	}
	var out fuse.AttrOut
	if errno := sn.Setattr(context.Background(), nil, &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_SIZE}}, &out); errno != syscall.EPERM {
		t.Errorf("truncate: %v, want EPERM", errno)
	}
}
