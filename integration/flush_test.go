package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCloseFlushByPolicy: close(2) of a written file waits for a FLUSH
// only under the close policy, which syncs there; under the others
// (FOPEN_NOFLUSH) it sends none, and the mtime of a write in place is
// still what stat shows through the mount once the file is closed.
func TestCloseFlushByPolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		policy    string
		wantFlush int64
	}{{"fsync", 0}, {"close", 1}} {
		t.Run(tc.policy, func(t *testing.T) {
			t.Parallel()
			m := startMount(t, "--writeback", tc.policy)
			p := filepath.Join(m.mnt, "f")
			if err := os.WriteFile(p, make([]byte, 8192), 0o644); err != nil {
				t.Fatal(err)
			}
			old := time.Unix(1000000000, 0)
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
			// Reading the stats file costs a FLUSH of its own (at its
			// close, after its figures were taken): measure it.
			s1 := readStats(t, m).Ops["flush"].Count
			s2 := readStats(t, m).Ops["flush"].Count
			before := time.Now()
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte("in place"), 100); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			s3 := readStats(t, m).Ops["flush"].Count
			if got := (s3 - s2) - (s2 - s1); got != tc.wantFlush {
				t.Errorf("FLUSH requests for one close of a written file: %d, want %d", got, tc.wantFlush)
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.ModTime().Before(before.Add(-time.Second)) {
				t.Errorf("mtime %v through the mount after a write at %v and close", fi.ModTime(), before)
			}
		})
	}
}
