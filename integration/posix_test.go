package integration

import (
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// TestPosix runs go-fuse's posixtest suite, which its own loopback
// filesystem passes, each test on a fresh mount.
//
// FdLeak compares the descriptors of this process before and after, so it
// must not overlap with anything else: it runs sequentially while the other
// subtests (and every parallel top-level test) wait; TestPosix itself is
// sequential for the same reason.
func TestPosix(t *testing.T) {
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fn := posixtest.All[name]
		t.Run(name, func(t *testing.T) {
			if name != "FdLeak" {
				t.Parallel()
			}
			m := startMount(t)
			fn(t, m.mnt)
		})
	}
}
