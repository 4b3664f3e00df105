package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// startHolder runs prog (sleep) in dir with stdin, and stops it when the
// test ends.
func startHolder(t *testing.T, prog, dir string, stdin *os.File) int {
	t.Helper()
	cmd := exec.Command(prog, "60")
	cmd.Dir = dir
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cmd.Process.Kill(); err != nil {
			t.Errorf("killing %s: %v", prog, err)
		}
		cmd.Wait() // killed: its exit status says so, nothing more
	})
	return cmd.Process.Pid
}

// TestDescribeHolders: the processes that hold a directory busy are named,
// each with how it holds it, on one line; this process is not.
func TestDescribeHolders(t *testing.T) {
	t.Parallel()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	dir := t.TempDir()
	if got := describeHolders(dir); got != "" {
		t.Errorf("nothing holds %s yet, but: %q", dir, got)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	cwd := startHolder(t, sleep, sub, nil)

	f, err := os.Create(filepath.Join(dir, "held"))
	if err != nil {
		t.Fatal(err)
	}
	open := startHolder(t, sleep, "/", f)
	// This process holds the file too, but is never named.
	defer f.Close()

	// An executable run from the directory.
	exe := filepath.Join(dir, "sleep")
	copyFile(t, sleep, exe)
	ran := startHolder(t, exe, "/", nil)

	got := describeHolders(dir)
	for _, want := range []string{
		fmt.Sprintf("pid %d (sleep, cwd)", cwd),
		fmt.Sprintf("pid %d (sleep)", open),
		fmt.Sprintf("pid %d (sleep, exe)", ran),
	} {
		if !strings.Contains(got, want) {
			t.Errorf("describeHolders = %q, lacks %q", got, want)
		}
	}
	if !strings.HasPrefix(got, " by pid ") || strings.Contains(got, "\n") {
		t.Errorf("describeHolders = %q: want one line, \" by pid ...\"", got)
	}
	if strings.Contains(got, fmt.Sprintf("pid %d ", os.Getpid())) {
		t.Errorf("describeHolders names this process: %q", got)
	}
	// Only what is under the directory: not a sibling with the same
	// prefix.
	if got := describeHolders(dir + "x"); got != "" {
		t.Errorf("describeHolders(%sx) = %q", dir, got)
	}
}

// TestDescribeHoldersCapped: past maxHolders processes it says how many
// more.
func TestDescribeHoldersCapped(t *testing.T) {
	t.Parallel()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	dir := t.TempDir()
	for i := 0; i < maxHolders+2; i++ {
		startHolder(t, sleep, dir, nil)
	}
	got := describeHolders(dir)
	if n := strings.Count(got, "pid "); n != maxHolders || !strings.HasSuffix(got, " and 2 more") {
		t.Errorf("describeHolders = %q: %d named, want %d and \" and 2 more\"", got, n, maxHolders)
	}
}

func TestMapped(t *testing.T) {
	t.Parallel()
	maps := filepath.Join(t.TempDir(), "maps")
	content := `55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1234                       /mnt/x/bin/prog
7f1c2a000000-7f1c2a200000 rw-s 00000000 00:28 99                         /mnt/x/data file (deleted)
7ffd1e5f0000-7ffd1e611000 rw-p 00000000 00:00 0                          [stack]
`
	if err := os.WriteFile(maps, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if !mapped(maps, "/mnt/x", "/mnt/x/bin/prog") {
		t.Errorf("a mapped file (deleted, with a space) under /mnt/x not found")
	}
	if mapped(maps, "/mnt/x/bin", "/mnt/x/bin/prog") {
		t.Errorf("the executable counted as a mapping")
	}
	if mapped(maps, "/mnt/y", "") || mapped(maps, "/mnt", "/mnt/x/bin/prog") != true {
		t.Errorf("wrong directory matched")
	}
}

func TestBusyLine(t *testing.T) {
	t.Parallel()
	err := errors.New("unmount /m: /usr/bin/fusermount3: failed to unmount /m: Device or resource busy\n (code exit status 1)\n")
	got := busyLine(t.TempDir(), err)
	want := "unmount /m: /usr/bin/fusermount3: failed to unmount /m: Device or resource busy (code exit status 1): files are still open on it: close them, or send the signal again to detach it lazily"
	if got != want {
		t.Errorf("busyLine = %q\nwant       %q", got, want)
	}
}

// copyFile copies from to a new executable to. No fork happens while to
// is open for writing, so that no child of a parallel test holds it open
// when it is run (ETXTBSY).
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
