package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=…"; without
// it, the module version or VCS revision from the build info is used.
var version = ""

// NewRootCommand returns the mmapfs command with its verbs. Without a verb,
// `mmapfs STORE MOUNTPOINT -o OPTIONS` is the form mount.fuse3 runs for
// fstab and `mount -t fuse.mmapfs`.
func NewRootCommand() *cobra.Command {
	var c mountConfig
	var foreground bool
	root := &cobra.Command{
		Use:   "mmapfs [flags] STORE MOUNTPOINT",
		Short: "A FUSE filesystem that serves every file from a memory mapping of its blob",
		Long: `A FUSE filesystem that serves every file from a memory mapping of its blob.

Without a command, mmapfs STORE MOUNTPOINT -o OPTIONS mounts STORE at
MOUNTPOINT the way mount(8) runs it through mount.fuse3 (an fstab line,
mount -t fuse.mmapfs). Every flag of 'mmapfs mount' is an option
(-o writeback=periodic:1s,keep-cache), as are the usual mount options (ro,
allow_other, nosuid, ...); the flags work too (--writeback periodic:1s).
mmapfs returns once the mount is ready and serves it in the background,
logging to syslog or to -o log=FILE; umount MOUNTPOINT ends it. With -f it
stays in the foreground, as 'mmapfs mount' does.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && cmd.Flags().NFlag() == 0 {
				return nil // help
			}
			if err := cobra.ExactArgs(2)(cmd, args); err != nil {
				return err
			}
			// A mistyped command (mmapfs stat MNT) must not mount a
			// store of that name.
			if _, err := os.Stat(args[0]); err != nil {
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					return fmt.Errorf("unknown command %q (did you mean %q?); to mount a store of that name, write ./%s", args[0], s[0], args[0])
				}
			}
			return nil
		},
	}
	// The flags of 'mmapfs mount' work here too, hidden to keep this
	// help short ('mmapfs mount --help' lists them).
	mountFlags := root.Flags()
	addMountFlags(mountFlags, &c)
	mountFlags.VisitAll(func(f *pflag.Flag) { f.Hidden = true })
	addOptionFlag(root.Flags(), &c)
	root.Flags().BoolVarP(&foreground, "foreground", "f", false, "stay in the foreground, logging to stderr (as 'mmapfs mount' does)")
	root.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		opts, err := c.options(mountFlags)
		if err != nil {
			return err
		}
		run := func(out io.Writer, ready func()) error {
			return runMount(out, args[0], args[1], opts, c.metrics, ready)
		}
		if pipe := daemonPipe(); pipe != nil {
			return runBackgroundDaemon(pipe, args[0], args[1], &c, run)
		}
		if !foreground {
			return startBackground(cmd.ErrOrStderr(), args[0], args[1], &c, givenFlags(cmd.Flags()))
		}
		out, err := c.logWriter(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		defer out.Close()
		return run(out, nil)
	}
	root.AddCommand(newMountCommand(), newStatsCommand(), newCacheCommand(), newPowerCutCommand(), newInjectCommand(), newTraceCommand(), newExperimentCommand(), newCheckCommand(), newVersionCommand())
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmd: cmd, err: err}
	})
	withUsage(root)
	return root
}

// usageError is a command line the command does not accept: main prints
// the command's usage line after it, as cobra CLIs do.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usage is what follows the error of a usageError.
func (e *usageError) usage() string {
	return fmt.Sprintf("Usage: %s\nRun '%s --help' for more.", e.cmd.UseLine(), e.cmd.CommandPath())
}

// withUsage makes the argument check of c and of every command below it
// return a usageError.
func withUsage(c *cobra.Command) {
	for _, sub := range c.Commands() {
		withUsage(sub)
	}
	if c.Args == nil {
		return
	}
	check := c.Args
	c.Args = func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{cmd: cmd, err: err}
		}
		return nil
	}
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "mmapfs", versionString())
			return err
		},
	}
}

func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " (" + s.Value[:12] + ")"
		}
	}
	return v + " " + bi.GoVersion
}
