package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/mmapfs/mmapfs/fs"
)

// TestBDIDefaultOptions: as root, a mount asks for fs.RootMaxRatio
// unless --bdi-max-ratio (as a flag or an -o option) or a profile sets
// it; the kernel-defaults profile and -1 leave the kernel's; the strict
// limit is left as the kernel sets it unless asked.
func TestBDIDefaultOptions(t *testing.T) {
	if fs.CanSetBDI() != nil {
		t.Skipf("this process cannot set a bdi (%v): the default is the kernel's", fs.CanSetBDI())
	}
	for _, c := range []struct {
		args             []string
		maxRatio, strict int
	}{
		{nil, fs.RootMaxRatio, -1},
		{[]string{"--profile", "exclusive"}, fs.RootMaxRatio, -1},
		{[]string{"--profile", "kernel-defaults"}, -1, -1},
		{[]string{"-o", "profile=kernel-defaults"}, -1, -1},
		{[]string{"--bdi-max-ratio", "-1"}, -1, -1},
		{[]string{"-o", "bdi_max_ratio=-1"}, -1, -1},
		{[]string{"--bdi-max-ratio", "30"}, 30, -1},
		{[]string{"--profile", "kernel-defaults", "--bdi-max-ratio", "5"}, 5, -1},
		{[]string{"--bdi-strict-limit", "0"}, fs.RootMaxRatio, 0},
	} {
		var cfg mountConfig
		set := pflag.NewFlagSet("mount", pflag.ContinueOnError)
		addMountFlags(set, &cfg)
		addOptionFlag(set, &cfg)
		if err := set.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		opts, err := cfg.options(set)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if opts.BDI.MaxRatio != c.maxRatio || opts.BDI.StrictLimit != c.strict || opts.BDI.ReadaheadKB != -1 {
			t.Errorf("%v: bdi %+v; want max ratio %d, strict limit %d, readahead -1", c.args, opts.BDI, c.maxRatio, c.strict)
		}
		// Only the root default may be dropped when the bdi refuses it.
		if want := len(c.args) == 0 || c.args[0] == "--profile" && c.args[1] == "exclusive" || c.args[0] == "--bdi-strict-limit"; opts.BDI.MaxRatioDefaulted != want {
			t.Errorf("%v: MaxRatioDefaulted %v, want %v", c.args, opts.BDI.MaxRatioDefaulted, want)
		}
	}
}

// TestURingEntriesRange: --uring-entries (as a flag or an -o option)
// takes 0 (the default) or 1 to maxURingEntries; anything else is
// refused with an error naming the flag and what it accepts.
func TestURingEntriesRange(t *testing.T) {
	for _, c := range []struct {
		args []string
		want int    // the entries options() returns
		err  string // or the error it must give
	}{
		{nil, 0, ""},
		{[]string{"--uring-entries", "0"}, 0, ""},
		{[]string{"--uring-entries", "1"}, 1, ""},
		{[]string{"--uring-entries", "64"}, 64, ""},
		{[]string{"-o", "uring_entries=8"}, 8, ""},
		{[]string{"--uring-entries", "-1"}, 0, "--uring-entries -1: out of range; accepted: 0 (the default, 4) or 1 to 64"},
		{[]string{"--uring-entries", "65"}, 0, "--uring-entries 65: out of range"},
		{[]string{"-o", "uring_entries=100000"}, 0, "--uring-entries 100000: out of range"},
	} {
		var cfg mountConfig
		set := pflag.NewFlagSet("mount", pflag.ContinueOnError)
		addMountFlags(set, &cfg)
		addOptionFlag(set, &cfg)
		if err := set.Parse(c.args); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		opts, err := cfg.options(set)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%v: %v", c.args, err)
		case c.err == "" && opts.URingEntries != c.want:
			t.Errorf("%v: entries %d, want %d", c.args, opts.URingEntries, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%v: error %v, want one containing %q", c.args, err, c.err)
		}
	}
}
