package main

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/wire"
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

func TestPrintStats(t *testing.T) {
	s := &wire.Snapshot{
		Policy:  "periodic:1s",
		Store:   "/s",
		Figures: figures(map[wire.ID]int64{wire.UnsyncedBytes: 3 << 20, wire.MsyncCalls: 7}),
		Ops: map[string]wire.OpStats{
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
	// Stopped once it has printed the header and two lines (or after 5 s,
	// which fails below): not at a fixed time, which a loaded machine can
	// reach before the second tick is printed.
	out := &linesWriter{want: 3, stop: make(chan struct{})}
	fallback := time.AfterFunc(5*time.Second, out.close)
	defer fallback.Stop()
	if err := watchStats(out, path, 50*time.Millisecond, false, out.stop); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 3 || !strings.Contains(lines[0], "unsynced MiB") {
		t.Fatalf("watch printed:\n%s", out.String())
	}
	// A line: no ops since the last one, 1.0 MB unsynced.
	if f := strings.Fields(lines[1]); len(f) != len(watchColumns)+1 || f[0] != "0" || f[5] != "1.0" {
		t.Errorf("line %q: want 0 ops/s and 1.0 MB unsynced", lines[1])
	}
	if err := watchStats(out, t.TempDir()+"/missing", time.Millisecond, false, out.stop); err == nil || !strings.Contains(err.Error(), "mmapfs mount") {
		t.Errorf("watch of a missing stats file: %v", err)
	}
}

// linesWriter collects what is written to it and closes stop once it holds
// want lines.
type linesWriter struct {
	bytes.Buffer
	want int
	stop chan struct{}
	once sync.Once
}

func (w *linesWriter) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if bytes.Count(w.Bytes(), []byte("\n")) >= w.want {
		w.close()
	}
	return n, err
}

func (w *linesWriter) close() { w.once.Do(func() { close(w.stop) }) }

// TestFlagRefusals checks that every out-of-range value is refused before
// anything is mounted (the store and mountpoint do not even exist), with
// the flag's name, the value and what is accepted.
func TestFlagRefusals(t *testing.T) {
	dir := t.TempDir()
	store, mnt := dir+"/no-store", dir+"/no-mnt"
	for _, c := range []struct {
		args []string
		want []string // all in the error
	}{
		{[]string{"--bdi-max-ratio", "-5"}, []string{"--bdi-max-ratio", "-5", "0 to 100"}},
		{[]string{"--bdi-max-ratio", "101"}, []string{"--bdi-max-ratio", "101", "0 to 100"}},
		{[]string{"--bdi-strict-limit", "2"}, []string{"--bdi-strict-limit", "2", "0 or 1"}},
		{[]string{"--readahead-kb", "-2"}, []string{"--readahead-kb", "-2", "0 to"}},
		{[]string{"--max-resident", "0"}, []string{"--max-resident", "0", "-1 (no bound) or 1 to"}},
		{[]string{"--max-resident", "-7"}, []string{"--max-resident", "-7"}},
		{[]string{"--max-write", "2000000"}, []string{"--max-write", "2000000", "4096 to 1048576"}},
		{[]string{"--max-write", "100"}, []string{"--max-write", "100", "4096 to 1048576"}},
		{[]string{"--max-readahead", "-1"}, []string{"--max-readahead", "-1", "0 (the kernel's default)"}},
		{[]string{"--attr-timeout", "-1s"}, []string{"--attr-timeout", "-1s", "must not be negative"}},
		{[]string{"--entry-timeout", "-5ms"}, []string{"--entry-timeout", "-5ms", "must not be negative"}},
		{[]string{"--writeback", "periodic:0s"}, []string{"--writeback", "periodic:0s", "positive duration"}},
		{[]string{"--writeback", "bogus"}, []string{"--writeback", "bogus", "fsync"}},
		{[]string{"--madvise", "bogus"}, []string{"--madvise", "bogus", "sequential"}},
		{[]string{"--metrics", "a:b:c"}, []string{"--metrics", "a:b:c"}},
		{[]string{"-o", "max-resident=0"}, []string{"--max-resident", "0"}},
		{[]string{"-o", "bdi_max_ratio=-5"}, []string{"--bdi-max-ratio", "-5"}},
		{[]string{"-o", "nosuch"}, []string{"nosuch", "unknown mount option"}},
		{[]string{"-o", "fsname=x"}, []string{"fsname", "unknown mount option"}},
		{[]string{"-o", "max-write"}, []string{"max-write", "needs a value"}},
		{[]string{"-o", "keep-cache=maybe"}, []string{"keep-cache=maybe"}},
		{[]string{"-o", "log="}, []string{"log=FILE"}},
		{[]string{"--profile", "fast"}, []string{"--profile", "fast", "exclusive", "kernel-defaults"}},
		{[]string{"-o", "profile=fast"}, []string{"-o profile=fast", "no such profile"}},
	} {
		for _, form := range [][]string{{"mount"}, {"-f"}} {
			args := append(append(append([]string{}, form...), c.args...), store, mnt)
			cmd := NewRootCommand()
			cmd.SetArgs(args)
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			err := cmd.Execute()
			if err == nil {
				t.Errorf("mmapfs %s succeeded", strings.Join(args, " "))
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("mmapfs %s: error %q does not say %q", strings.Join(args, " "), err, w)
				}
			}
		}
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Errorf("a refused command created the store %s: %v", store, err)
	}
}

// TestMountOptions checks that -o sets every kind of option: flags by
// name (with "_" for "-"), switches bare or =false, the generic mount
// options, and the ones mount.fuse ignores.
func TestMountOptions(t *testing.T) {
	var c mountConfig
	set := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	addMountFlags(set, &c)
	c.o = []string{`writeback=periodic:1s,keep-cache,max_write=1048576,ro,allow_other,nosuid,dev,suid,noexec,_netdev,nofail,x-systemd.automount,noauto,user,log=/tmp/a\,b`, "direct-io=false,populate,default_permissions"}
	opts, err := c.options(set)
	if err != nil {
		t.Fatal(err)
	}
	if p := opts.Store.Policy.String(); p != "periodic:1s" {
		t.Errorf("policy %s, want periodic:1s", p)
	}
	if !opts.KeepCache || opts.MaxWrite != 1<<20 || !opts.ReadOnly || !opts.AllowOther || !opts.Dev || !opts.Suid || !opts.NoExec || opts.DirectIO || !opts.Store.Populate || !opts.DefaultPermissions {
		t.Errorf("options not applied: %+v", opts)
	}
	if c.logFile != "/tmp/a,b" {
		t.Errorf("log file %q, want /tmp/a,b", c.logFile)
	}
}

func TestSplitOptions(t *testing.T) {
	got := strings.Join(splitOptions(`a,b=c\,d,,e\\`), "|")
	if want := `a|b=c,d||e\`; got != want {
		t.Errorf("splitOptions: %q, want %q", got, want)
	}
}

// TestUsageLine checks that a command line with the wrong arguments gets
// the command's usage line, for every command that checks its arguments.
func TestUsageLine(t *testing.T) {
	for _, args := range [][]string{{"mount"}, {"mount", "a"}, {"version", "x"}, {"stats"}, {"mount", "--bogus", "a", "b"}, {"a"}, {"stat", "x"}} {
		cmd := NewRootCommand()
		cmd.SetArgs(args)
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		err := cmd.Execute()
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("mmapfs %s: error %v, want a usage error", strings.Join(args, " "), err)
			continue
		}
		if u := ue.usage(); !strings.HasPrefix(u, "Usage: mmapfs ") || !strings.Contains(u, "--help' for more.") {
			t.Errorf("mmapfs %s: usage %q", strings.Join(args, " "), u)
		}
	}
}

func TestFallbackLogPath(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", "/state")
	want := map[string]string{"/srv/data": "srv-data.log", "/srv/data/": "srv-data.log", "/": "root.log"}
	for mnt, name := range want {
		got := fallbackLogPath(mnt)
		dir := "/var/log/mmapfs"
		if os.Geteuid() != 0 {
			dir = "/state/mmapfs"
		}
		if got != dir+"/"+name {
			t.Errorf("fallbackLogPath(%q) = %q, want %s/%s", mnt, got, dir, name)
		}
	}
}

// TestProfiles checks that a profile sets its flags, that a flag given on
// its own (as a flag or as an -o option, before or after the profile)
// wins over it, and that -o profile= works as --profile does.
func TestProfiles(t *testing.T) {
	parse := func(args ...string) (fs.Options, *mountConfig) {
		t.Helper()
		var c mountConfig
		set := pflag.NewFlagSet("mount", pflag.ContinueOnError)
		addMountFlags(set, &c)
		addOptionFlag(set, &c)
		if err := set.Parse(args); err != nil {
			t.Fatal(err)
		}
		opts, err := c.options(set)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return opts, &c
	}
	def, _ := parse()
	if def.Profile != "default" || def.KeepCache || !def.AutoCache || def.ExplicitInvalData || def.AttrTimeout != time.Second {
		t.Errorf("no profile: %+v", def)
	}
	ex, _ := parse("--profile", "exclusive")
	if ex.Profile != "exclusive" || !ex.KeepCache || !ex.ExplicitInvalData || ex.AttrTimeout != time.Hour || ex.EntryTimeout != time.Hour {
		t.Errorf("--profile exclusive: %+v", ex)
	}
	for _, args := range [][]string{
		{"--attr-timeout", "5s", "--profile", "exclusive"},
		{"--profile", "exclusive", "--attr-timeout", "5s"},
		{"-o", "profile=exclusive,attr_timeout=5s"},
		{"-o", "attr_timeout=5s", "--profile=exclusive"},
	} {
		o, _ := parse(args...)
		if o.Profile != "exclusive" || o.AttrTimeout != 5*time.Second || o.EntryTimeout != time.Hour || !o.KeepCache {
			t.Errorf("%v: profile %q, attr timeout %v, entry timeout %v, keep-cache %v; want exclusive, 5s, 1h, true", args, o.Profile, o.AttrTimeout, o.EntryTimeout, o.KeepCache)
		}
	}
	for _, args := range [][]string{
		{"--profile", "exclusive", "--auto-cache"},
		{"--profile", "exclusive", "--direct-io"},
		{"-o", "profile=exclusive,auto_cache"},
	} {
		if o, _ := parse(args...); o.KeepCache {
			t.Errorf("%v: the profile's --keep-cache turned off the auto-cache or direct I/O given on its own", args)
		}
	}
	k, c := parse("--profile", "kernel-defaults", "--writeback", "none")
	if k.KeepCache || k.AutoCache || k.ExplicitInvalData || k.DirectIO || k.WritebackCache || k.MaxWrite != 0 || k.BDI != fs.NoBDIChanges || k.AttrTimeout != time.Second || k.Transport != "dev" || c.policy != "none" {
		t.Errorf("--profile kernel-defaults: %+v", k)
	}
	// The defaults: 1 MiB requests and the transport auto picks.
	if d, _ := parse(); d.MaxWrite != 1<<20 || d.Transport != "auto" {
		t.Errorf("the defaults: --max-write %d, --transport %q; want 1048576 and auto", d.MaxWrite, d.Transport)
	}
}
