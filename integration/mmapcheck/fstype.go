package mmapcheck

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// FSType names the filesystem dir is on: the type /proc/self/mountinfo
// gives its mount ("ext4", "tmpfs", "fuse.mmapfs"), or statfs(2)'s magic
// number when that cannot be read.
func FSType(dir string) string {
	if t := mountinfoType(dir); t != "" {
		return t
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	return fmt.Sprintf("magic %#x", st.Type)
}

// mountinfoType is the type of the mount of dir: the mount whose point is
// the longest prefix of dir's real path (the last one listed wins a tie,
// being mounted over the others).
func mountinfoType(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return ""
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	best, typ := -1, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		point := unescape(fields[4])
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) {
			continue
		}
		if real != point && !strings.HasPrefix(real, strings.TrimSuffix(point, "/")+"/") {
			continue
		}
		if len(point) >= best {
			best, typ = len(point), fields[sep+1]
		}
	}
	return typ
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &c); err == nil {
				b.WriteByte(byte(c))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
