package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// A profile is a named set of mount flags: --profile NAME (or -o
// profile=NAME) sets each of them unless the flag itself is given, on the
// command line or as an -o option, which always wins.
type profile struct {
	name string
	// flags are the flag values the profile sets, in the order they are
	// applied.
	flags [][2]string
	// promise is what the profile keeps and what it gives up, for --help
	// and the error that lists the profiles.
	promise string
}

// profiles are the named profiles, in the order --help lists them.
var profiles = []profile{
	{
		name:    "default",
		promise: "the defaults: every promise of the README holds; a root daemon's mount may hold 10 % of the machine's dirty page budget, strictly (the kernel gives a FUSE mount 1 %)",
	},
	{
		name: "exclusive",
		flags: [][2]string{
			{"keep-cache", "true"},
			{"auto-inval-data", "false"},
			{"attr-timeout", "1h"},
			{"entry-timeout", "1h"},
		},
		promise: "the store is changed only through this mount: the kernel keeps pages, attributes and names for an hour; a change made in the store behind the mount may not be seen for that long",
	},
	{
		name: "kernel-defaults",
		flags: [][2]string{
			{"keep-cache", "false"},
			{"auto-cache", "false"},
			{"auto-inval-data", "true"},
			{"direct-io", "false"},
			{"writeback-cache", "false"},
			{"attr-timeout", "1s"},
			{"entry-timeout", "1s"},
			{"max-write", "0"},
			{"max-readahead", "0"},
			{"transport", "dev"},
			{"bdi-max-ratio", "-1"},
			{"bdi-strict-limit", "-1"},
			{"readahead-kb", "-1"},
			{"madvise", "normal"},
		},
		promise: "every kernel switch as the kernel and go-fuse set it, and go-fuse's /dev/fuse transport, for experiments that must see stock FUSE behaviour",
	},
}

// profileNames lists the profiles' names, for errors and help.
func profileNames() string {
	names := make([]string, len(profiles))
	for i, p := range profiles {
		names[i] = p.name
	}
	return strings.Join(names, ", ")
}

// profileHelp describes every profile, one line each, for --help.
func profileHelp() string {
	var b strings.Builder
	for _, p := range profiles {
		set := make([]string, len(p.flags))
		for i, f := range p.flags {
			set[i] = "--" + f[0] + "=" + f[1]
		}
		fmt.Fprintf(&b, "  %-16s %s", p.name, p.promise)
		if len(set) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(set, " "))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// findProfile returns the profile called name.
func findProfile(name string) (profile, error) {
	for _, p := range profiles {
		if p.name == name {
			return p, nil
		}
	}
	return profile{}, fmt.Errorf("profile %q: no such profile; the profiles are %s", name, profileNames())
}

// applyProfile sets, on f, each flag of the profile named name that was
// not given itself (f.Changed), and returns the flags it set, sorted.
func applyProfile(f *pflag.FlagSet, name string) ([]string, error) {
	p, err := findProfile(name)
	if err != nil {
		return nil, err
	}
	var set []string
	for _, fv := range p.flags {
		if f.Changed(fv[0]) || overridden(f, fv[0]) {
			continue
		}
		if err := f.Set(fv[0], fv[1]); err != nil {
			return nil, fmt.Errorf("profile %s: setting --%s=%s: %w", name, fv[0], fv[1], err)
		}
		set = append(set, fv[0])
	}
	sort.Strings(set)
	return set, nil
}

// overriddenBy names, for a flag a profile may set, the flags that when
// given on their own win over it though they are other flags: a keep-cache
// the profile sets would silently turn off the auto-cache or the direct
// I/O the user asked for (each of them is in force only without it).
var overriddenBy = map[string][]string{
	"keep-cache": {"auto-cache", "direct-io"},
}

// overridden says a flag given on its own overrides the profile's name.
func overridden(f *pflag.FlagSet, name string) bool {
	for _, o := range overriddenBy[name] {
		if f.Changed(o) {
			return true
		}
	}
	return false
}
