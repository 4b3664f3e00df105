package mmapcheck

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// peerItem is one thing the other process does: read data at off (through
// read(2) and through its mapping) and compare, or store data at off
// through its mapping (then msync).
type peerItem struct {
	read bool
	off  int
	data []byte
}

func (p peerItem) arg() string {
	op := "w"
	if p.read {
		op = "r"
	}
	return fmt.Sprintf("%s:%d:%s", op, p.off, hex.EncodeToString(p.data))
}

// peerFailure is what the other process found wrong.
type peerFailure struct{ msg string }

func (p *peerFailure) Error() string { return p.msg }

// runPeer runs the other process on file with items and waits for it.
// Exit status 1 is a finding (a *peerFailure with its message); anything
// else that is not 0 is an error.
func runPeer(peer func([]string) *exec.Cmd, file string, items []peerItem) (string, error) {
	args := []string{file}
	for _, it := range items {
		args = append(args, it.arg())
	}
	cmd := peer(args)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return out.String(), &peerFailure{msg: "the other process: " + strings.TrimSpace(out.String())}
	}
	return out.String(), err
}

// Peer plays the other process of the shared-other-process guarantee:
// args are the file and the items (r:OFF:HEX, w:OFF:HEX). It maps the
// whole file MAP_SHARED, checks every read item through pread(2) and
// through the mapping, stores every write item through the mapping and
// msyncs. It returns the exit status: 0 when all held, 1 when one did not
// (said on out), 2 on a bad argument or an error.
func Peer(args []string, out io.Writer) int {
	if len(args) < 1 {
		fmt.Fprintln(out, "peer: no file")
		return 2
	}
	var items []peerItem
	for _, a := range args[1:] {
		parts := strings.SplitN(a, ":", 3)
		if len(parts) != 3 || (parts[0] != "r" && parts[0] != "w") {
			fmt.Fprintf(out, "peer: bad item %q (want r:OFF:HEX or w:OFF:HEX)\n", a)
			return 2
		}
		off, err := strconv.Atoi(parts[1])
		data, herr := hex.DecodeString(parts[2])
		if err != nil || herr != nil || off < 0 {
			fmt.Fprintf(out, "peer: bad item %q\n", a)
			return 2
		}
		items = append(items, peerItem{read: parts[0] == "r", off: off, data: data})
	}
	f, err := os.OpenFile(args[0], os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(out, "peer: %v\n", err)
		return 2
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		fmt.Fprintf(out, "peer: %v\n", err)
		return 2
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), rw, shared)
	if err != nil {
		fmt.Fprintf(out, "mmap(MAP_SHARED) of %s: %s\n", args[0], errnoText(err))
		return 1
	}
	defer unix.Munmap(b)
	for _, it := range items {
		if it.off+len(it.data) > len(b) {
			fmt.Fprintf(out, "peer: item at %d..%d past the %d-byte file\n", it.off, it.off+len(it.data), len(b))
			return 2
		}
		if it.read {
			got, err := readAt(f, int64(it.off), len(it.data))
			if err != nil {
				fmt.Fprintf(out, "pread: %v\n", err)
				return 2
			}
			if !bytes.Equal(got, it.data) {
				fmt.Fprintf(out, "its read(2) at %d..%d: %s\n", it.off, it.off+len(it.data), diffAt(it.off, got, it.data))
				return 1
			}
			mgot, faulted := load(b, it.off, len(it.data))
			if faulted {
				fmt.Fprintf(out, "its mapping at %d..%d: SIGBUS\n", it.off, it.off+len(it.data))
				return 1
			}
			if !bytes.Equal(mgot, it.data) {
				fmt.Fprintf(out, "its mapping at %d..%d: %s\n", it.off, it.off+len(it.data), diffAt(it.off, mgot, it.data))
				return 1
			}
			continue
		}
		if store(b, it.off, it.data) {
			fmt.Fprintf(out, "a store through its mapping at %d: SIGBUS\n", it.off)
			return 1
		}
		if err := unix.Msync(b, unix.MS_SYNC); err != nil {
			fmt.Fprintf(out, "its msync(MS_SYNC): %s\n", errnoText(err))
			return 1
		}
	}
	return 0
}
