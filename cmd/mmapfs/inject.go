package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mmapfs/mmapfs/fs/inject"
	"github.com/mmapfs/mmapfs/fs/wire"
)

func newInjectCommand() *cobra.Command {
	var list, asJSON bool
	var clear bool
	cmd := &cobra.Command{
		Use:   "inject MOUNTPOINT RULE... | --list MOUNTPOINT | --clear MOUNTPOINT [ID]",
		Short: "Add, list or clear the fault-injection rules of an mmapfs mount",
		Long: `Make the mmapfs mount at MOUNTPOINT fail, delay, tear or shorten chosen
requests, while it runs (the rules of 'mmapfs mount --inject RULE' can be
given at mount too). With RULEs, adds them (all, or none if one is bad) and
prints the mount's rules; --list prints them with their hit counts; --clear
removes every rule, or the one with ID.

A rule is key=value parts separated by commas, without spaces:

  op=OP          required: read, write, fsync, flush, open, create, tmpfile,
                 truncate (a size change), setattr (any other), fallocate,
                 copy_file_range, lseek, getattr, lookup, readdir, readlink,
                 unlink, rmdir, rename, mkdir, mknod, symlink, link,
                 setxattr, getxattr, listxattr, removexattr, statfs; or the
                 daemon's own work on the store: msync (a sync of a file's
                 pages) and fault (a page fault copying to or from a
                 mapping, as an I/O error of the store's device)
  path=GLOB      the file's path relative to the mount root (path.Match:
                 db/*-wal); default every file. For rename, the old name;
                 for create, mkdir, link, symlink, the new one
  nth=N          only the Nth matching call
  after=BYTES    only once BYTES of matching calls have passed (read, write,
                 msync, fault; 4KiB, 1MiB; K, M, G are powers of 1000)
  prob=P         with probability P (0<P<=1); seed=S for a chosen sequence
  times=K        at most K times
and exactly one action:
  errno=NAME     fail with that errno (EIO, ENOSPC, EDQUOT, EROFS, ...)
  delay=D        wait D (200ms), or a uniform time in D1-D2 (5ms-50ms)
  torn=K         write: only the first K bytes reach the file, the client
                 sees a short count; torn=K:ERRNO: then that errno (a
                 write of K bytes or fewer reaches the file whole, then
                 gets the errno)
  short=K        read: return at most K bytes
  fsyncgate      with op=msync,errno=NAME, on a mount with --powercut-sim:
                 the failed sync reports the error once and its pages are
                 lost, put back to their last synced content; the next
                 fsync succeeds (Linux's writeback-error behaviour)

Several rules may match a call: each counts it, their delays add up, and
the lowest-numbered one with another action decides it. A rule on flush
makes the files opened while it is in force send FLUSH at every close(2).
Every injected error is logged by the daemon with its rule (the first 10
hits of each rule, then at 100, 1000, ... hits); 'mmapfs stats' lists the
rules with their hits. The mount's own files (.mmapfs-stats,
.mmapfs-control) are never affected, and the rules end with the mount: the
store's last sync at unmount is a real one.`,
		Example: `  mmapfs inject /mnt op=fsync,errno=EIO,times=1
  mmapfs inject /mnt 'op=write,path=db/*-wal,nth=3,torn=512'
  mmapfs inject /mnt op=msync,errno=EIO,fsyncgate
  mmapfs inject /mnt --list
  mmapfs inject /mnt --clear 2`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				return errors.New("no mountpoint given")
			case list && clear:
				return errors.New("--list and --clear do not go together")
			case list && len(args) > 1:
				return errors.New("--list takes only the mountpoint")
			case clear && len(args) > 2:
				return errors.New("--clear takes the mountpoint and at most one rule id")
			case !list && !clear && len(args) == 1:
				return errors.New("no rule given (or --list, --clear)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			mnt, rest := args[0], args[1:]
			var req string
			switch {
			case list:
				req = wire.ControlInjectList
			case clear:
				req = wire.ControlInjectClear
				if len(rest) == 1 {
					if id, err := strconv.Atoi(rest[0]); err != nil || id < 1 {
						return fmt.Errorf("inject --clear %s: not a rule id (a whole number, as --list shows them)", rest[0])
					}
					req += " " + rest[0]
				}
			default:
				for _, text := range rest {
					if _, err := inject.Parse(text); err != nil {
						var re *inject.RuleError
						if errors.As(err, &re) {
							return fmt.Errorf("inject: rule %q: %s (valid: %s)", text, re.Detail(), inject.Forms)
						}
						return fmt.Errorf("inject: %w", err)
					}
				}
				req = wire.ControlInjectAdd + " " + strings.Join(rest, " ")
			}
			reply, raw, err := controlAs("inject", mnt, req)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				_, err := out.Write(raw)
				return err
			}
			switch {
			case len(reply.InjectAdded) > 0:
				ids := make([]string, len(reply.InjectAdded))
				for i, id := range reply.InjectAdded {
					ids[i] = "#" + strconv.Itoa(id)
				}
				fmt.Fprintf(out, "added %s on %s\n", strings.Join(ids, ", "), mnt)
			case clear:
				fmt.Fprintf(out, "cleared %s on %s\n", wire.Plural(reply.InjectCleared, "rule", "rules"), mnt)
			}
			return printInjectRules(out, reply.Inject, true)
		},
	}
	cmd.Flags().BoolVar(&list, "list", false, "list the mount's rules with their hit counts")
	cmd.Flags().BoolVar(&clear, "clear", false, "remove every rule, or the one whose ID follows the mountpoint")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the daemon's answer as JSON")
	return cmd
}

// printInjectRules prints fault-injection rules as a table; none says so
// if none is true, else prints nothing.
func printInjectRules(w io.Writer, rules []wire.InjectRule, none bool) error {
	if len(rules) == 0 {
		if none {
			_, err := fmt.Fprintln(w, "no fault-injection rules")
			return err
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "id\trule\tcalls\thits\tlast hit\n")
	for _, r := range rules {
		last := "-"
		if r.LastHit != nil {
			last = fmt.Sprintf("%s ago on %s", time.Since(*r.LastHit).Round(time.Millisecond), r.LastPath)
			if r.LastPath == "" {
				last = fmt.Sprintf("%s ago", time.Since(*r.LastHit).Round(time.Millisecond))
			}
		}
		rule := r.Rule
		if r.Seed != 0 && !strings.Contains(rule, "seed=") {
			rule += fmt.Sprintf(" (seed=%d)", r.Seed)
		}
		fmt.Fprintf(tw, "#%d\t%s\t%d\t%d\t%s\n", r.ID, rule, r.Calls, r.Hits, last)
	}
	return tw.Flush()
}
