package main

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/mmapfs/mmapfs/backing"
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
	}
	f := cmd.Flags()
	var policy, advice, metrics string
	var autoInval bool
	f.StringVar(&policy, "writeback", "fsync", "writeback policy: "+backing.PolicyNames)
	f.BoolVar(&opts.Store.IgnoreFsync, "unsafe-ignore-fsync", false, "make fsync and fdatasync return success without syncing (unsafe: for measuring what fsync costs)")
	f.StringVar(&advice, "madvise", "normal", "madvise advice for every mapping: "+backing.AdviceNames)
	f.BoolVar(&opts.Store.Populate, "populate", false, "map blobs with MAP_POPULATE (fault every page in at open)")
	f.BoolVar(&opts.Store.Preallocate, "preallocate", false, "fallocate what an extending write adds before copying it (ENOSPC before anything is written; slower for small files)")
	f.BoolVar(&opts.Store.PowerCutSim, "powercut-sim", false, "keep each page's last synced content so that 'mmapfs powercut' can show what a power cut would lose (costs a page of memory per page changed since its sync)")
	f.IntVar(&opts.Store.MaxResident, "max-resident", backing.DefaultMaxResident, "most blobs with a descriptor and a mapping at once; past it, open files not in use are unmapped and reopened on access (-1: no bound)")
	f.BoolVar(&opts.KeepCache, "keep-cache", false, "keep the kernel's page cache of a file across opens (FOPEN_KEEP_CACHE)")
	f.BoolVar(&autoInval, "auto-inval-data", true, "let the kernel drop a file's cached pages when its mtime changes (CAP_AUTO_INVAL_DATA); false: only changes through the mount are cached right, and cached reads are cheaper (CAP_EXPLICIT_INVAL_DATA)")
	f.BoolVar(&opts.DirectIO, "direct-io", false, "bypass the kernel's page cache for reads and writes (FOPEN_DIRECT_IO; client mmaps still work)")
	f.BoolVar(&opts.WritebackCache, "writeback-cache", false, "let the kernel buffer writes and send them later in larger pieces (CAP_WRITEBACK_CACHE)")
	f.DurationVar(&opts.AttrTimeout, "attr-timeout", opts.AttrTimeout, "how long the kernel may cache attributes")
	f.DurationVar(&opts.EntryTimeout, "entry-timeout", opts.EntryTimeout, "how long the kernel may cache names")
	f.IntVar(&opts.MaxWrite, "max-write", 0, "largest READ/WRITE request in bytes, up to 1 MiB (0: go-fuse's default, 128 KiB)")
	f.IntVar(&opts.MaxReadahead, "max-readahead", 0, "cap on the kernel's readahead in bytes (0: the kernel's default)")
	f.BoolVar(&opts.ReadOnly, "read-only", false, "mount read-only")
	f.BoolVar(&opts.AllowOther, "allow-other", false, "let other users use the mount; turns on default_permissions (the kernel checks modes)")
	f.IntVar(&opts.BDI.MaxRatio, "bdi-max-ratio", -1, "percent of the kernel's dirty page budget the mount may use (its bdi max_ratio; the kernel gives FUSE 1); -1: leave it")
	f.IntVar(&opts.BDI.StrictLimit, "bdi-strict-limit", -1, "1: hold the mount to its bdi share strictly (the kernel's FUSE default), 0: let it use the global budget; -1: leave it")
	f.IntVar(&opts.BDI.ReadaheadKB, "readahead-kb", -1, "the mount's bdi readahead in KiB; -1: leave it")
	f.BoolVar(&opts.Debug, "debug", false, "log every FUSE request and reply")
	f.StringVar(&metrics, "metrics", "", "serve Prometheus metrics at ADDR (host:port or port; loopback unless a host is named)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		p, err := backing.ParsePolicy(policy)
		if err != nil {
			return err
		}
		opts.Store.Policy = p
		a, err := backing.ParseAdvice(advice)
		if err != nil {
			return err
		}
		opts.Store.Advice = a
		opts.ExplicitInvalData = !autoInval
		if opts.MaxWrite < 0 || opts.MaxWrite > 1<<20 {
			return fmt.Errorf("--max-write %d: must be between 0 and 1048576", opts.MaxWrite)
		}
		if b := opts.BDI; b.MaxRatio > 100 || b.StrictLimit > 1 {
			return fmt.Errorf("--bdi-max-ratio must be 0..100 and --bdi-strict-limit 0 or 1 (or -1 to leave them)")
		}
		if opts.MaxReadahead < 0 {
			return fmt.Errorf("--max-readahead %d: must not be negative", opts.MaxReadahead)
		}
		return runMount(cmd, args[0], args[1], opts, metrics)
	}
	return cmd
}

// loopbackAddr binds addr to loopback unless it names a host: "9100" and
// ":9100" become "127.0.0.1:9100".
func loopbackAddr(addr string) (string, error) {
	if !strings.Contains(addr, ":") {
		addr = ":" + addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--metrics %q: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// serveMetrics starts the Prometheus endpoint; it returns once the
// listener is bound, so that a bad address fails the mount command.
func serveMetrics(addr string, srv *fs.Server, logger *log.Logger) (*http.Server, error) {
	addr, err := loopbackAddr(addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(srv.Collector()); err != nil {
		return nil, errors.Join(fmt.Errorf("--metrics: %w", err), ln.Close())
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// Said before serving, so that whoever can scrape has read where.
	logger.Printf("serving Prometheus metrics at http://%s/metrics", ln.Addr())
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Printf("metrics server at %s: %v", addr, err)
		}
	}()
	return hs, nil
}

func runMount(cmd *cobra.Command, store, mountpoint string, opts fs.Options, metricsAddr string) error {
	logger := log.New(cmd.ErrOrStderr(), "mmapfs: ", log.LstdFlags)
	opts.Logger = logger
	// Take the signals before mounting, so that one arriving while the
	// mount comes up is not lost (nor kills the daemon with a mount up).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	if opts.Store.IgnoreFsync {
		logger.Printf("WARNING: --unsafe-ignore-fsync: fsync and fdatasync will return success without syncing; data they acknowledge can be lost in a power cut")
	}
	srv, err := fs.Mount(store, mountpoint, opts)
	if err != nil {
		return err
	}
	logger.Printf("serving %s at %s (writeback policy %s)", srv.Store().Root(), srv.Mountpoint(), opts.Store.Policy)
	if metricsAddr != "" {
		hs, err := serveMetrics(metricsAddr, srv, logger)
		if err != nil {
			return errors.Join(err, srv.Unmount(), srv.Wait())
		}
		defer func() {
			if err := hs.Close(); err != nil {
				logger.Printf("closing the metrics server: %v", err)
			}
		}()
	}

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
		case <-srv.PowerCut():
			// The store holds what a power cut would have left: end
			// as a crash would, without syncing or unmounting cleanly.
			logger.Printf("power cut: dropping %s as a crash would", srv.Mountpoint())
			if err := srv.Drop(); err != nil {
				return fmt.Errorf("power cut: %w", err)
			}
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
