package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCheckCommand runs mmapfs with args and returns its output and error.
// The guarantee with another process is left out by the callers: the peer
// is the mmapfs binary, not this test binary.
func runCheckCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := NewRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// dirEmpty fails the test unless dir holds nothing.
func dirEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("%s holds %s after the check, want nothing", dir, ents[0].Name())
	}
}

func TestCheckCommandText(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, err := runCheckCommand(t, "check", "--only", "shared-msync,past-eof", "--only", "remount", "--seed", "5", dir)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want a header, 3 results and a summary:\n%s", len(lines), out)
	}
	for i, want := range []string{"mmapfs check " + dir + " (", "pass  shared-msync ", "pass  past-eof ", "n/a   remount              no --remount COMMAND", "2 passed, 0 failed, 1 not applicable"} {
		if !strings.HasPrefix(lines[i], want) {
			t.Errorf("line %d: %q, want it to start with %q", i, lines[i], want)
		}
	}
	if !strings.Contains(lines[0], "seed 5") {
		t.Errorf("header %q does not give the seed", lines[0])
	}
	dirEmpty(t, dir)
}

func TestCheckCommandJSON(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, err := runCheckCommand(t, "check", "--json", "--quick", "--only", "private,remount", "--seed", "9", dir)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	var rep checkReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not a report: %v\n%s", err, out)
	}
	if rep.Dir != dir || rep.Seed != 9 || rep.Ops != checkQuickOps || rep.Filesystem == "" {
		t.Errorf("report %+v: want dir %s, seed 9, %d ops, a filesystem", rep, dir, checkQuickOps)
	}
	if len(rep.Results) != 2 || rep.Results[0].Verdict != "pass" || rep.Results[1].Verdict != "n/a" || rep.Passed != 1 || rep.NotApplicable != 1 {
		t.Errorf("results %+v", rep)
	}
	dirEmpty(t, dir)
}

// TestCheckCommandFails: a failed guarantee is a FAIL line with what to
// reproduce it with, and exit status 1.
func TestCheckCommandFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, err := runCheckCommand(t, "check", "--only", "remount", "--remount", "exit 3", "--seed", "11", dir)
	var st *exitStatus
	if !errors.As(err, &st) || st.code != 1 {
		t.Fatalf("check with a failing remount: %v, want exit status 1\n%s", err, out)
	}
	if !strings.Contains(out, "FAIL  remount") || !strings.Contains(out, "expected the remount command succeeds") ||
		!strings.Contains(out, "reproduce: mmapfs check "+dir+" --remount 'exit 3' --only remount --seed 11 (fails at step") {
		t.Errorf("output lacks the failure and how to reproduce it:\n%s", out)
	}
	dirEmpty(t, dir)
}

// TestCheckRemountSays: a remount command that fails puts the last line
// of its error output into the failure, where the cause usually is.
func TestCheckRemountSays(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, _ := runCheckCommand(t, "check", "--only", "remount", "--remount", "echo first >&2; echo 'umount: x: target is busy.' >&2; echo; exit 3", dir)
	if !strings.Contains(out, "exit status 3: umount: x: target is busy.") {
		t.Errorf("the failure lacks the command's last line of error output:\n%s", out)
	}
	dirEmpty(t, dir)
}

func TestCheckCommandErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args  []string
		want  string
		usage bool
	}{
		{[]string{"check"}, "accepts 1 arg(s)", true},
		{[]string{"check", file}, file + ": not a directory", false},
		{[]string{"check", filepath.Join(dir, "none")}, "none: no such file or directory", false},
		{[]string{"check", "--ops", "0", dir}, "--ops 0", true},
		{[]string{"check", "--only", "bogus", dir}, `no guarantee "bogus"`, false},
	} {
		_, err := runCheckCommand(t, c.args...)
		var ue *usageError
		if err == nil || !strings.Contains(err.Error(), c.want) || errors.As(err, &ue) != c.usage {
			t.Errorf("mmapfs %v: %v, want an error with %q (usage error: %v)", c.args, err, c.want, c.usage)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%s holds %d entries after the refusals, want only the file", dir, len(ents))
	}
}

// TestCheckPeer plays the hidden other process through the command line.
func TestCheckPeer(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("hello, mapping"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runCheckCommand(t, "check", "--peer", "--", p, "r:7:"+hex.EncodeToString([]byte("mapping"))); err != nil {
		t.Errorf("peer on what the file holds: %v %s", err, out)
	}
	out, err := runCheckCommand(t, "check", "--peer", "--", p, "r:0:"+hex.EncodeToString([]byte("bye")))
	var st *exitStatus
	if !errors.As(err, &st) || st.code != 1 || !strings.Contains(out, "read(2) at 0..3") {
		t.Errorf("peer on a difference: %v, %q; want exit 1 and the difference", err, out)
	}
}
