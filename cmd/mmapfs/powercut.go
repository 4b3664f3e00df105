package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// dropWait bounds how long powercut waits for the daemon to drop the mount.
const dropWait = 30 * time.Second

func newPowerCutCommand() *cobra.Command {
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "powercut [--dry-run] MOUNTPOINT",
		Short: "Cut the power of an mmapfs mount: keep only what was synced, then drop the mount",
		Long: `Simulate a power cut on the mmapfs mount at MOUNTPOINT, which must have been
mounted with --powercut-sim: every page the daemon wrote since its last
msync/fsync gets its last synced content back, every file its last synced
size, and the mount is dropped as a crash would drop it (the daemon exits
without syncing). The store then holds exactly what a worst-case power cut
would have left of what reached the daemon; mount it again to look.

Writes still in the kernel's page cache of the mount (with
--writeback-cache, or a client's dirty mapping not yet written back) never
reached the daemon and are lost too, as they would be: the report cannot
count them.

With --dry-run nothing is cut: it lists what a cut now would lose. Without
--powercut-sim on the mount it lists the unsynced writes a real power cut
could lose (but cannot simulate the cut).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := wire.ControlPowerCut
			if dryRun {
				req = wire.ControlPowerCutDryRun
			}
			mnt := args[0]
			var before syscall.Stat_t
			if err := syscall.Stat(mnt, &before); err != nil {
				return mountError("powercut", mnt, &os.PathError{Op: "stat", Path: mnt, Err: err})
			}
			reply, raw, err := control(mnt, req)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if _, err := out.Write(raw); err != nil {
					return err
				}
			} else if err := printCut(out, mnt, reply); err != nil {
				return err
			}
			if dryRun {
				return nil
			}
			if err := waitDropped(mnt, before.Dev, dropWait); err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintf(out, "mount %s dropped; mount the store again to see what survived\n", mnt)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what a power cut now would lose, without cutting")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the daemon's answer as JSON")
	return cmd
}

// control sends one request of mmapfs powercut to the mount's control
// file and returns the answer.
func control(mnt, req string) (*wire.ControlReply, []byte, error) {
	return controlAs("powercut", mnt, req)
}

// controlAs sends one request to the mount's control file and returns the
// answer; cmd names the command in errors.
func controlAs(cmd, mnt, req string) (*wire.ControlReply, []byte, error) {
	path := filepath.Join(mnt, fs.ControlName)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, mountError(cmd, mnt, err)
	}
	_, werr := f.Write([]byte(req))
	// The answer is there even when the request failed: it says why.
	raw, rerr := io.ReadAll(io.NewSectionReader(f, 0, 1<<30))
	cerr := f.Close()
	var reply wire.ControlReply
	if rerr == nil && len(raw) > 0 {
		rerr = json.Unmarshal(raw, &reply)
	}
	switch {
	case werr != nil && req == wire.ControlPowerCut && reply.Error != "" && !reply.Simulation:
		return nil, nil, fmt.Errorf("powercut: %s was mounted without --powercut-sim, so it kept no synced content to put back: mount the store again with --powercut-sim to simulate a power cut, or run `mmapfs powercut --dry-run %s` to list what a real one could lose", mnt, mnt)
	case werr != nil && reply.Error != "":
		return nil, nil, fmt.Errorf("%s on %s: %s", req, mnt, reply.Error)
	case werr != nil:
		return nil, nil, mountError(cmd, mnt, fmt.Errorf("request %q: %w", req, werr))
	case rerr != nil:
		return nil, nil, mountError(cmd, mnt, fmt.Errorf("request %q: reading the answer: %w", req, rerr))
	case cerr != nil:
		return nil, nil, mountError(cmd, mnt, fmt.Errorf("request %q: closing the control file: %w", req, cerr))
	}
	return &reply, raw, nil
}

// printCut prints the answer to a power-cut request.
func printCut(w io.Writer, mnt string, r *wire.ControlReply) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	if r.Report == nil {
		// A dry run without the simulation.
		fmt.Fprintf(tw, "%s runs without --powercut-sim: these writes are not synced and a power cut now could lose them.\n", mnt)
		fmt.Fprintf(tw, "(Their synced content is not kept, so the cut cannot be simulated.)\n\n")
		if len(r.AtRisk) == 0 {
			fmt.Fprintf(tw, "nothing is at risk: every write is synced\n")
			return tw.Flush()
		}
		printAtRisk(tw, r.AtRisk, len(r.AtRisk))
		return tw.Flush()
	}
	rep := r.Report
	if rep.Done {
		fmt.Fprintf(tw, "power cut on %s: the store now holds what a power cut would have left\n\n", mnt)
	} else {
		fmt.Fprintf(tw, "a power cut on %s now would lose:\n\n", mnt)
	}
	if len(rep.Files) == 0 {
		fmt.Fprintf(tw, "nothing: every write was synced\n")
		return tw.Flush()
	}
	fmt.Fprintf(tw, "file\tlost bytes\tsize -> synced size\tranges put back\n")
	for _, f := range rep.Files {
		name := f.Name
		if !f.Open {
			name += " (closed)"
		}
		if f.Gone {
			// Nothing of it is left to put back or cut.
			fmt.Fprintf(tw, "%s (gone)\t-\t-\t-\n", name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d -> %d\t%s\n", name, wire.BinarySize(f.Restored+f.Cutoff), f.Size, f.Synced, rangesStr(f.Ranges, f.More))
	}
	sum := wire.Summarize(rep)
	if r.Summary != nil {
		sum = *r.Summary
	}
	fmt.Fprintf(tw, "\n%s\n", sum.String(rep.Done))
	return tw.Flush()
}

// waitDropped waits until mnt is no longer the mount whose device was dev.
func waitDropped(mnt string, dev uint64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var st syscall.Stat_t
		err := syscall.Stat(mnt, &st)
		if (err == nil && st.Dev != dev) || errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("powercut: waiting for %s to be dropped: %w", mnt, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("powercut: the power was cut, but %s is still mounted after %v", mnt, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
