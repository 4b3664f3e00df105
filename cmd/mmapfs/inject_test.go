package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestInjectOptions: -o inject=RULE takes the rule's commas as they are
// (the parts after it named by the rule language's keys are the rule's),
// escaped commas too, repeated, beside other options and --inject; a bad
// rule or fsyncgate without --powercut-sim is refused before mounting.
func TestInjectOptions(t *testing.T) {
	for _, tc := range []struct {
		flags, o []string
		want     []string // the rules, or nil for a refusal
		refusal  string
	}{
		{o: []string{"inject=op=fsync,errno=EIO,times=1,keep-cache,inject=op=msync,errno=EIO,fsyncgate,powercut-sim"},
			want: []string{"op=fsync,errno=EIO,times=1", "op=msync,errno=EIO,fsyncgate"}},
		{o: []string{`inject=op=write\,torn=512:EIO`, "ro"}, want: []string{"op=write,torn=512:EIO"}},
		{flags: []string{"--inject", "op=read,short=1", "--inject", "op=open,path=a/*,delay=1ms-2ms"}, o: []string{"inject=op=unlink,errno=EPERM"},
			want: []string{"op=read,short=1", "op=open,path=a/*,delay=1ms-2ms", "op=unlink,errno=EPERM"}},
		{o: []string{"inject=op=wrte,errno=EIO"}, refusal: `--inject "op=wrte,errno=EIO": op "wrte": want one of read, write,`},
		{o: []string{"inject=op=fsync"}, refusal: `--inject "op=fsync": no action`},
		{flags: []string{"--inject", "op=msync,errno=EIO,fsyncgate"}, refusal: `--inject "op=msync,errno=EIO,fsyncgate": fsyncgate: fsyncgate puts the lost pages back`},
	} {
		var c mountConfig
		set := pflag.NewFlagSet("mount", pflag.ContinueOnError)
		addMountFlags(set, &c)
		addOptionFlag(set, &c)
		args := append([]string{}, tc.flags...)
		for _, o := range tc.o {
			args = append(args, "-o", o)
		}
		if err := set.Parse(args); err != nil {
			t.Fatal(err)
		}
		opts, err := c.options(set)
		switch {
		case tc.want == nil && (err == nil || !strings.Contains(err.Error(), tc.refusal)):
			t.Errorf("%q: %v, want a refusal containing %q", args, err, tc.refusal)
		case tc.want != nil && err != nil:
			t.Errorf("%q: %v", args, err)
		case tc.want != nil && !slices.Equal(opts.Inject, tc.want):
			t.Errorf("%q: rules %q, want %q", args, opts.Inject, tc.want)
		}
	}
}
