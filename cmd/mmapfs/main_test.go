package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/fs"
)

func TestLoopbackAddr(t *testing.T) {
	cases := map[string]string{
		"9100":         "127.0.0.1:9100",
		":9100":        "127.0.0.1:9100",
		"0.0.0.0:9100": "0.0.0.0:9100",
		"[::1]:9100":   "[::1]:9100",
		"host:80":      "host:80",
	}
	for in, want := range cases {
		if got, err := loopbackAddr(in); err != nil || got != want {
			t.Errorf("loopbackAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := loopbackAddr("a:b:c"); err == nil {
		t.Errorf("loopbackAddr(a:b:c) succeeded")
	}
}

func TestBytesStr(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 10 << 20: "10.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := bytesStr(n); got != want {
			t.Errorf("bytesStr(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestPrintStats(t *testing.T) {
	s := &fs.Snapshot{
		Policy:        "periodic:1s",
		Store:         "/s",
		UnsyncedBytes: 3 << 20,
		MsyncCalls:    7,
		Ops: map[string]fs.OpStats{
			"write": {Count: 12, Errors: 1},
			"read":  {Count: 5},
		},
	}
	var out bytes.Buffer
	if err := printStats(&out, s); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{"periodic:1s", "3.0 MiB", "7 calls", "write", "12"} {
		if !strings.Contains(text, want) {
			t.Errorf("table lacks %q:\n%s", want, text)
		}
	}
	if strings.Index(text, "read ") > strings.Index(text, "write ") {
		t.Errorf("ops not sorted:\n%s", text)
	}
}

func TestCommandErrors(t *testing.T) {
	for _, args := range [][]string{
		{"mount", "--writeback", "bogus", "s", "m"},
		{"mount", "--madvise", "bogus", "s", "m"},
		{"mount", "--max-write", "2000000", "s", "m"},
		{"mount", "only-one-arg"},
		{"version", "extra"},
		{"stats"},
	} {
		cmd := NewRootCommand()
		cmd.SetArgs(args)
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		if err := cmd.Execute(); err == nil {
			t.Errorf("mmapfs %s succeeded", strings.Join(args, " "))
		}
	}
}

func TestVersionCommand(t *testing.T) {
	cmd := NewRootCommand()
	cmd.SetArgs([]string{"version"})
	var out bytes.Buffer
	cmd.SetOut(&out)
	if err := cmd.Execute(); err != nil || !strings.HasPrefix(out.String(), "mmapfs ") {
		t.Errorf("version: %q, %v", out.String(), err)
	}
}

func TestWatchStats(t *testing.T) {
	path := t.TempDir() + "/stats"
	if err := os.WriteFile(path, []byte(`{"policy":"fsync","unsynced_bytes":1048576,"bytes_written":0,"ops":{"write":{"count":3}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	time.AfterFunc(280*time.Millisecond, func() { close(stop) })
	var out bytes.Buffer
	if err := watchStats(&out, path, 50*time.Millisecond, false, stop); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 3 || !strings.Contains(lines[0], "unsynced MB") {
		t.Fatalf("watch printed:\n%s", out.String())
	}
	// A line: no ops since the last one, 1.0 MB unsynced.
	if f := strings.Fields(lines[1]); len(f) != 10 || f[0] != "0" || f[5] != "1.0" {
		t.Errorf("line %q: want 0 ops/s and 1.0 MB unsynced", lines[1])
	}
	if err := watchStats(&out, t.TempDir()+"/missing", time.Millisecond, false, stop); err == nil || !strings.Contains(err.Error(), "mmapfs mount") {
		t.Errorf("watch of a missing stats file: %v", err)
	}
}
