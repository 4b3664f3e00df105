package main

import (
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
	}
}
