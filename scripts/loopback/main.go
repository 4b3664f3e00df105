// Command loopback mounts go-fuse's loopback filesystem (fs.NewLoopbackRoot)
// at the go-fuse version of this module, like go-fuse's example/loopback. The
// benchmark (scripts/bench) uses it as the peer of mmapfs: as it mounts by
// default (as root, with kernel FUSE passthrough) and, with -no-passthrough,
// on the ordinary FUSE data path (CAP_PASSTHROUGH disabled).
//
//	go run ./scripts/loopback [-no-passthrough] MOUNTPOINT ORIGINAL
//
// It serves in the foreground and unmounts on SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

func main() {
	log.SetFlags(log.Lmicroseconds)
	noPassthrough := flag.Bool("no-passthrough", false, "disable kernel FUSE passthrough (DisabledCapabilities: CAP_PASSTHROUGH)")
	debug := flag.Bool("debug", false, "log every FUSE request")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: loopback [-no-passthrough] MOUNTPOINT ORIGINAL\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 2 {
		flag.Usage()
		os.Exit(2)
	}
	mnt, orig := flag.Arg(0), flag.Arg(1)
	root, err := fs.NewLoopbackRoot(orig)
	if err != nil {
		log.Fatalf("NewLoopbackRoot(%s): %v", orig, err)
	}
	sec := time.Second
	opts := &fs.Options{
		AttrTimeout:     &sec,
		EntryTimeout:    &sec,
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			Debug:  *debug,
			FsName: orig,
			Name:   "loopback",
		},
	}
	if *noPassthrough {
		opts.MountOptions.DisabledCapabilities = fuse.CAP_PASSTHROUGH
	}
	server, err := fs.Mount(mnt, root, opts)
	if err != nil {
		log.Fatalf("mount %s: %v", mnt, err)
	}
	c := make(chan os.Signal, 2)
	signal.Notify(c, os.Interrupt, syscall.SIGTERM)
	go func() {
		for range c {
			if err := server.Unmount(); err != nil {
				log.Printf("unmount: %v", err)
			}
		}
	}()
	server.Wait()
}
