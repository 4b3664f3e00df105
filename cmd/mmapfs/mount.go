package main

import (
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/mmapfs/mmapfs/fs"
)

func newMountCommand() *cobra.Command {
	opts := fs.DefaultOptions()
	cmd := &cobra.Command{
		Use:   "mount [flags] STORE MOUNTPOINT",
		Short: "Mount STORE at MOUNTPOINT and serve it until SIGINT or SIGTERM",
		Long: `Mount the directory STORE (created if missing) at MOUNTPOINT and serve it in
the foreground. Every regular file is served from a MAP_SHARED mapping of
the file of the same name in STORE.

On SIGINT or SIGTERM the mount is unmounted, the store synced, and mmapfs
exits 0. If files are still open on the mount, unmounting fails and mmapfs
keeps serving; a second signal detaches the mount lazily (umount -l), and
mmapfs exits once the last file is closed.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMount(cmd, args[0], args[1], opts)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.Debug, "debug", opts.Debug, "log every FUSE request and reply")
	f.DurationVar(&opts.AttrTimeout, "attr-timeout", opts.AttrTimeout, "how long the kernel may cache attributes")
	f.DurationVar(&opts.EntryTimeout, "entry-timeout", opts.EntryTimeout, "how long the kernel may cache names")
	return cmd
}

func runMount(cmd *cobra.Command, store, mountpoint string, opts fs.Options) error {
	logger := log.New(cmd.ErrOrStderr(), "mmapfs: ", log.LstdFlags)
	opts.Logger = logger
	// Take the signals before mounting, so that one arriving while the
	// mount comes up is not lost (nor kills the daemon with a mount up).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	srv, err := fs.Mount(store, mountpoint, opts)
	if err != nil {
		return err
	}
	logger.Printf("serving %s at %s", srv.Store().Root(), srv.Mountpoint())

	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	signals := 0
	for {
		select {
		case err := <-done:
			if err != nil {
				return err
			}
			logger.Printf("unmounted %s; store synced", srv.Mountpoint())
			return nil
		case sig := <-sigs:
			signals++
			if signals == 1 {
				logger.Printf("%v: unmounting %s", sig, srv.Mountpoint())
				if err := srv.Unmount(); err != nil {
					logger.Printf("%v; files are still open on it: close them, or send the signal again to detach it lazily", err)
				}
				continue
			}
			logger.Printf("%v: detaching %s lazily; exiting when its last open file is closed", sig, srv.Mountpoint())
			if err := srv.UnmountLazy(); err != nil {
				return fmt.Errorf("detaching %s: %w", srv.Mountpoint(), err)
			}
		}
	}
}
