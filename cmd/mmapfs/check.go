package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mmapfs/mmapfs/integration/mmapcheck"
)

// How many operations the model run makes, by default and with --quick.
const (
	checkOps      = 2000
	checkQuickOps = 200
)

// checkReport is the --json output of mmapfs check: the run (directory,
// its filesystem, seed, operations of the model run), one result per
// guarantee and the counts.
type checkReport struct {
	Dir           string             `json:"dir"`
	Filesystem    string             `json:"filesystem"`
	Seed          uint64             `json:"seed"`
	Ops           int                `json:"ops"`
	Results       []mmapcheck.Result `json:"results"`
	Passed        int                `json:"passed"`
	Failed        int                `json:"failed"`
	NotApplicable int                `json:"not_applicable"`
}

func newCheckCommand() *cobra.Command {
	var (
		quick, asJSON, peer bool
		ops                 int
		seed                uint64
		only                []string
		remountCmd          string
	)
	cmd := &cobra.Command{
		Use:   "check DIR",
		Short: "Check the guarantees Linux gives mappings of files on DIR's filesystem",
		Long: `Check the guarantees Linux gives a program that maps files, on any
directory (a FUSE mount, tmpfs, ext4, NFS): MAP_SHARED stores reaching
read(2), another mapping, another process and a forked child; MAP_PRIVATE
stores staying private; zeros and SIGBUS past the end of a file, after
ftruncate grows and shrinks it; write(2) reaching an existing mapping
(through another descriptor and a hard link too); O_DIRECT; msync
MS_INVALIDATE and MS_ASYNC; MADV_DONTNEED; mremap; the mapping's permission
rules; fallocate and hole punching under a mapping; a model run of random
operations against an in-memory model; and, with --remount, that msynced
and fsynced data survive an unmount and a mount.

The files are made in a fresh subdirectory of DIR, removed at the end (on
SIGINT and SIGTERM too). Each guarantee gets one line: pass, FAIL (what was
expected, what was seen, and the command and step that reproduce it) or n/a
(why: the filesystem refuses O_DIRECT, hole punching, a shared mapping;
a finding in itself). The exit status is 0 only when nothing failed.

It needs no root: DIR must be a directory the user can write.`,
		Example: `  mmapfs check /mnt/myfuse
  mmapfs check --quick --json /dev/shm
  mmapfs check --only model --seed 42 --ops 20000 /mnt/myfuse
  mmapfs check --remount 'umount /mnt/x && mmapfs /store /mnt/x' /mnt/x`,
		Args: func(cmd *cobra.Command, args []string) error {
			if peer {
				return nil
			}
			return cobra.ExactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if peer {
				if code := mmapcheck.Peer(args, cmd.OutOrStdout()); code != 0 {
					return &exitStatus{code: code}
				}
				return nil
			}
			if !cmd.Flags().Changed("ops") {
				ops = checkOps
				if quick {
					ops = checkQuickOps
				}
			}
			if ops <= 0 {
				return &usageError{cmd: cmd, err: fmt.Errorf("--ops %d: want at least 1", ops)}
			}
			if !cmd.Flags().Changed("seed") {
				seed = rand.Uint64N(1<<31) + 1
			}
			return runCheck(cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], checkSettings{
				ops: ops, seed: seed, only: only, remount: remountCmd, json: asJSON,
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&quick, "quick", false, fmt.Sprintf("a short model run (%d operations instead of %d): a few seconds", checkQuickOps, checkOps))
	f.IntVar(&ops, "ops", checkOps, "operations of the model run")
	f.Uint64Var(&seed, "seed", 0, "seed of the data and of the model run (default: a random one, printed)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringSliceVar(&only, "only", nil, "run only these guarantees (repeat, or separate with commas): "+strings.Join(mmapcheck.Names(), ", "))
	f.StringVar(&remountCmd, "remount", "", "a shell command that unmounts DIR's filesystem and mounts it again, for the remount guarantee")
	f.BoolVar(&peer, "peer", false, "play the other process of the shared-other-process guarantee (internal)")
	f.MarkHidden("peer") //nolint:errcheck // the flag is defined just above
	return cmd
}

// checkSettings are the flags of one mmapfs check.
type checkSettings struct {
	ops     int
	seed    uint64
	only    []string
	remount string
	json    bool
}

// runCheck checks dir and prints the report on out (progress and the
// remount command's output on errOut). It returns an *exitStatus of 1 when
// a guarantee failed.
func runCheck(out, errOut io.Writer, dir string, s checkSettings) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this program to run the other process: %w", err)
	}
	cfg := mmapcheck.Config{
		Dir:  dir,
		Only: s.only,
		Seed: s.seed,
		Ops:  s.ops,
		Peer: func(args []string) *exec.Cmd {
			c := exec.Command(exe, append([]string{"check", "--peer", "--"}, args...)...)
			c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			return c
		},
		Replay: "mmapfs check " + shellQuote(dir),
	}
	if s.remount != "" {
		// The guarantee needs the remount to fail again.
		cfg.Replay += " --remount " + shellQuote(s.remount)
		cfg.Remount = func() error {
			c := exec.Command("/bin/sh", "-c", s.remount)
			// Its output goes on errOut and, its last line, into
			// the failure: "target is busy" is the cause. One
			// writer for both, so that one goroutine writes it.
			var said tailWriter
			w := io.MultiWriter(errOut, &said)
			c.Stdout, c.Stderr = w, w
			if err := c.Run(); err != nil {
				if last := said.lastLine(); last != "" {
					return fmt.Errorf("--remount %q: %w: %s", s.remount, err, last)
				}
				return fmt.Errorf("--remount %q: %w", s.remount, err)
			}
			return nil
		}
	}
	c, err := mmapcheck.New(cfg)
	if err != nil {
		return err
	}
	// SIGINT and SIGTERM remove the check's files, then end the process
	// as the signal would.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	defer func() {
		signal.Stop(sigs)
		close(done)
	}()
	go func() {
		select {
		case sig := <-sigs:
			if err := c.Abort(); err != nil {
				fmt.Fprintf(errOut, "mmapfs check: interrupted (%v); %v\n", sig, err)
			} else {
				fmt.Fprintf(errOut, "mmapfs check: interrupted (%v); removed %s\n", sig, c.Dir())
			}
			os.Exit(128 + int(sig.(syscall.Signal)))
		case <-done:
		}
	}()

	rep := checkReport{Dir: cfg.Dir, Filesystem: mmapcheck.FSType(dir), Seed: s.seed, Ops: s.ops}
	if abs, err := filepath.Abs(dir); err == nil {
		rep.Dir = abs
	}
	if !s.json {
		fmt.Fprintf(out, "mmapfs check %s (%s), seed %d, model run %d operations\n", rep.Dir, rep.Filesystem, s.seed, s.ops)
	}
	rep.Results = c.Run(func(r mmapcheck.Result) {
		if !s.json {
			fmt.Fprintln(out, resultLine(r))
		}
	})
	cerr := c.Close()
	for _, r := range rep.Results {
		switch r.Verdict {
		case mmapcheck.Pass:
			rep.Passed++
		case mmapcheck.Fail:
			rep.Failed++
		default:
			rep.NotApplicable++
		}
	}
	if s.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
	} else {
		fmt.Fprintf(out, "%d passed, %d failed, %d not applicable\n", rep.Passed, rep.Failed, rep.NotApplicable)
	}
	if cerr != nil {
		return cerr
	}
	if rep.Failed > 0 {
		return &exitStatus{code: 1}
	}
	return nil
}

// resultLine is a result's line of the text report; a failure's details
// (the model run's last operations) follow it, indented.
func resultLine(r mmapcheck.Result) string {
	switch r.Verdict {
	case mmapcheck.Pass:
		line := fmt.Sprintf("pass  %-20s %s", r.Name, r.Description)
		if r.Why != "" {
			line += " (" + r.Why + ")"
		}
		return line
	case mmapcheck.Fail:
		line := fmt.Sprintf("FAIL  %-20s expected %s; seen %s; reproduce: %s", r.Name, r.Expected, r.Seen, r.Reproduce)
		if r.Details != "" {
			line += "\n      " + strings.ReplaceAll(strings.TrimSpace(r.Details), "\n", "\n      ")
		}
		return line
	}
	return fmt.Sprintf("n/a   %-20s %s", r.Name, r.Why)
}

// shellQuote quotes s for a shell command line when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// tailWriter keeps the last tailSize bytes written to it.
type tailWriter struct{ b []byte }

const tailSize = 1024

func (w *tailWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	if len(w.b) > tailSize {
		w.b = append(w.b[:0], w.b[len(w.b)-tailSize:]...)
	}
	return len(p), nil
}

// lastLine is the last line that is not blank of what was written.
func (w *tailWriter) lastLine() string {
	lines := strings.Split(strings.TrimSpace(string(w.b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
