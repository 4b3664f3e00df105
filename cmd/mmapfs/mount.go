package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs"
	"github.com/mmapfs/mmapfs/fs/inject"
	"github.com/mmapfs/mmapfs/fs/uring"
)

// defaultMaxWrite is --max-write's default: the kernel's largest, so that
// a 1 MiB write(2) is one WRITE rather than eight of go-fuse's 128 KiB
// (1 MiB sequential writes went at 0.38 of --max-write 1048576
// --bdi-max-ratio 100 --bdi-strict-limit 0 with 128 KiB, and at 0.95 of
// it with --max-write 1048576 alone; README, issue 16). It changes no
// promise: what is durable and what is seen stay as they were.
const defaultMaxWrite = 1 << 20

// maxURingEntries bounds --uring-entries: every entry is a daemon thread
// pinned to its CPU's queue with a populated payload buffer (132 KiB to
// 1 MiB), on every CPU, so a large value costs threads and memory at
// once, not just ring space.
const maxURingEntries = 64

// mountConfig is what the flags (and -o options) of a mount set, before
// it is checked and turned into fs.Options by options.
type mountConfig struct {
	opts                    fs.Options
	policy, advice, metrics string
	profile                 string // --profile NAME
	profileFromO            bool   // the profile was given as -o profile=NAME
	autoInval               bool
	logFile                 string   // -o log=FILE: the daemon's log goes there
	o                       []string // the -o arguments, as given
}

// addMountFlags defines the flags of 'mmapfs mount' on f, bound to c. The
// root command's -o options are looked up in such a set too, so that every
// flag is an -o option.
func addMountFlags(f *pflag.FlagSet, c *mountConfig) {
	c.opts = fs.DefaultOptions()
	opts := &c.opts
	f.StringVar(&c.profile, "profile", "default", "a named set of the flags below, each still given on its own winning over it: "+profileNames()+" (see mmapfs mount --help)")
	f.StringVar(&c.policy, "writeback", "fsync", "writeback policy: "+backing.PolicyNames)
	f.BoolVar(&opts.Store.IgnoreFsync, "unsafe-ignore-fsync", false, "make fsync and fdatasync return success without syncing (unsafe: for measuring what fsync costs)")
	f.StringVar(&c.advice, "madvise", "normal", "how the daemon brings a file's pages into memory: normal (no fault read-around; it reads in what each READ asks for, and windows ahead of a sequential reader), random (each page as the copy touches it), sequential (MADV_SEQUENTIAL: the store's readahead at every miss), willneed (normal, and MADV_WILLNEED at each map), hugepage (MADV_HUGEPAGE and the kernel's read-around); one of "+backing.AdviceNames)
	f.BoolVar(&opts.Store.Populate, "populate", false, "map blobs with MAP_POPULATE (fault every page in at open)")
	f.BoolVar(&opts.Store.Preallocate, "preallocate", false, "fallocate what an extending write adds before copying it (ENOSPC before anything is written; slower for small files)")
	f.BoolVar(&opts.Store.PowerCutSim, "powercut-sim", false, "keep each page's last synced content so that 'mmapfs powercut' can show what a power cut would lose (costs a page of memory per page changed since its sync)")
	f.IntVar(&opts.Store.MaxResident, "max-resident", backing.DefaultMaxResident, "most blobs with a descriptor and a mapping at once, at least 1; past it, open files not in use are unmapped and reopened on access (-1: no bound)")
	f.BoolVar(&opts.KeepCache, "keep-cache", false, "keep the kernel's page cache of a file across opens (FOPEN_KEEP_CACHE)")
	f.BoolVar(&opts.AutoCache, "auto-cache", opts.AutoCache, "keep the kernel's page cache of a file at an open when the file is as the kernel last saw it (mtime, ctime and size), drop it when the file changed (libfuse's auto_cache); --keep-cache and --direct-io override it")
	f.BoolVar(&c.autoInval, "auto-inval-data", true, "let the kernel drop a file's cached pages when its mtime changes (CAP_AUTO_INVAL_DATA); false: only changes through the mount are cached right, and cached reads are cheaper (CAP_EXPLICIT_INVAL_DATA)")
	f.BoolVar(&opts.DirectIO, "direct-io", false, "bypass the kernel's page cache for reads and writes (FOPEN_DIRECT_IO; client mmaps still work)")
	f.BoolVar(&opts.WritebackCache, "writeback-cache", false, "let the kernel buffer writes and send them later in larger pieces (CAP_WRITEBACK_CACHE)")
	f.DurationVar(&opts.AttrTimeout, "attr-timeout", opts.AttrTimeout, "how long the kernel may cache attributes (0 or more)")
	f.DurationVar(&opts.EntryTimeout, "entry-timeout", opts.EntryTimeout, "how long the kernel may cache names (0 or more)")
	f.IntVar(&opts.MaxWrite, "max-write", defaultMaxWrite, "largest READ/WRITE request in bytes, 4096 to 1048576 (0: go-fuse's default, 128 KiB)")
	f.IntVar(&opts.MaxReadahead, "max-readahead", 0, "cap on the kernel's readahead in bytes, up to 4294967295 (0: the kernel's default)")
	f.BoolVar(&opts.ReadOnly, "read-only", false, "mount read-only")
	f.BoolVar(&opts.AllowOther, "allow-other", false, "let other users use the mount; turns on default_permissions (the kernel checks modes)")
	f.BoolVar(&opts.DefaultPermissions, "default-permissions", false, "let the kernel check file modes before it sends a request (default_permissions)")
	f.IntVar(&opts.BDI.MaxRatio, "bdi-max-ratio", -1, fmt.Sprintf("percent of the kernel's dirty page budget the mount may use, 0 to 100 (its bdi max_ratio); -1: leave the kernel's, which gives every FUSE mount 1 (default: %d for a root daemon, which may set it, and the kernel's otherwise; --profile kernel-defaults: the kernel's)", fs.RootMaxRatio))
	f.IntVar(&opts.BDI.StrictLimit, "bdi-strict-limit", -1, "1: hold the mount to its bdi share strictly, even while the machine is under its dirty limits (the kernel's FUSE default, kept by default), 0: let it use the global budget (a wedged daemon's mount can then hold all of it); -1: leave it")
	f.IntVar(&opts.BDI.ReadaheadKB, "readahead-kb", -1, "the mount's bdi readahead in KiB, 0 or more; -1: leave it")
	f.StringArrayVar(&opts.Inject, "inject", nil, "fault-injection RULE, repeatable: op=OP[,path=GLOB][,nth=N|after=BYTES|prob=P[,seed=S]][,times=K],ACTION with ACTION errno=NAME, delay=D[-D2], torn=K[:ERRNO] (write), short=K (read), or errno=NAME,fsyncgate (op=msync, needs --powercut-sim); as -o inject=RULE, the rule's commas need no escaping (see 'mmapfs inject --help')")
	f.StringVar(&opts.Transport, "transport", "auto", "how requests reach the daemon: dev (read and write /dev/fuse), uring (FUSE over io_uring, Linux 6.14+: as root, with the fuse module's enable_uring on: echo 1 > /sys/module/fuse/parameters/enable_uring), or auto (uring where it can be had, dev otherwise; the log and the stats say which)")
	f.IntVar(&opts.URingEntries, "uring-entries", 0, fmt.Sprintf("with --transport uring: ring entries (daemon threads) per CPU queue, each serving one request at a time, 1 to %d (0: %d)", maxURingEntries, uring.DefaultEntries))
	f.BoolVar(&opts.Debug, "debug", false, "log every FUSE request and reply")
	f.StringVar(&c.metrics, "metrics", "", "serve Prometheus metrics at ADDR (host:port or port; loopback unless a host is named)")
	f.BoolVar(&opts.SharedStore, "unsafe-shared-store", false, "serve the store even if another mmapfs daemon serves it, and let others serve it too (unsafe: each daemon's unsynced-bytes figures, fsync accounting and power-cut simulation miss the other's writes, and each mount's kernel caches go stale behind the other's); a daemon without the flag is still refused while this one runs")
}

// addOptionFlag defines -o on f.
func addOptionFlag(f *pflag.FlagSet, c *mountConfig) {
	f.StringArrayVarP(&c.o, "options", "o", nil, "mount options, comma-separated: any flag of 'mmapfs mount' as NAME=VALUE (a switch as NAME or NAME=false), "+
		"log=FILE, and the usual ro, rw, allow_other, default_permissions, dev, nodev, suid, nosuid, exec, noexec (_netdev, nofail, auto, noauto, user, users, nouser, defaults and x-* are ignored, as mount.fuse does)")
}

func newMountCommand() *cobra.Command {
	var c mountConfig
	cmd := &cobra.Command{
		Use:   "mount [flags] STORE MOUNTPOINT",
		Short: "Mount STORE at MOUNTPOINT and serve it until SIGINT or SIGTERM",
		Long: `Mount the directory STORE (created if missing) at MOUNTPOINT and serve it in
the foreground. Every regular file is served from a MAP_SHARED mapping of
the file of the same name in STORE. The line "serving STORE at MOUNTPOINT"
is logged once the mount is ready to use.

On SIGINT or SIGTERM the mount is unmounted, the store synced, and mmapfs
exits 0. If files are still open on the mount, unmounting fails and mmapfs
keeps serving; a second signal detaches the mount lazily (umount -l), and
mmapfs exits once the last file is closed. A signal after the unmount
succeeded changes nothing.

Only one mmapfs daemon serves a store at a time: a store already served is
refused (see --unsafe-shared-store).

Profiles (--profile NAME, or -o profile=NAME): a named set of the flags
below; a flag given on its own wins over the profile's value.
` + profileHelp(),
		Args: cobra.ExactArgs(2),
	}
	addMountFlags(cmd.Flags(), &c)
	addOptionFlag(cmd.Flags(), &c)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		opts, err := c.options(cmd.Flags())
		if err != nil {
			return err
		}
		out, err := c.logWriter(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		defer out.Close()
		return runMount(out, args[0], args[1], opts, c.metrics, nil)
	}
	return cmd
}

// options applies the -o options to the flags of f (a set made by
// addMountFlags) and checks every value, so that nothing wrong is found
// only once the store is mounted.
func (c *mountConfig) options(f *pflag.FlagSet) (fs.Options, error) {
	for _, arg := range c.o {
		for _, o := range joinInjectRules(splitOptions(arg)) {
			if err := c.applyOption(f, o); err != nil {
				return fs.Options{}, err
			}
		}
	}
	if _, err := applyProfile(f, c.profile); err != nil {
		form := "--profile"
		if c.profileFromO { // -o is applied after the flags: its value is the one in force
			form = "-o profile=" + c.profile
		}
		return fs.Options{}, fmt.Errorf("%s: %w", form, err)
	}
	opts := c.opts
	opts.Profile = c.profile
	if !f.Changed("bdi-max-ratio") && fs.CanSetBDI() == nil {
		// Neither the flag nor the profile set it: a root daemon
		// raises the kernel's 1 % (fs.RootMaxRatio says why).
		opts.BDI.MaxRatio = fs.RootMaxRatio
		opts.BDI.MaxRatioDefaulted = true
	}
	p, err := backing.ParsePolicy(c.policy)
	if err != nil {
		return fs.Options{}, fmt.Errorf("--writeback: %w", err)
	}
	opts.Store.Policy = p
	a, err := backing.ParseAdvice(c.advice)
	if err != nil {
		return fs.Options{}, fmt.Errorf("--madvise: %w", err)
	}
	opts.Store.Advice = a
	opts.ExplicitInvalData = !c.autoInval
	for _, r := range []struct {
		flag      string
		v, lo, hi int64
		none      int64 // a value outside lo..hi that is accepted too
		want      string
	}{
		{"--max-write", int64(opts.MaxWrite), 4096, 1 << 20, 0, "0 (go-fuse's default, 128 KiB) or 4096 to 1048576"},
		{"--max-readahead", int64(opts.MaxReadahead), 0, math.MaxUint32, 0, "0 (the kernel's default) to 4294967295"},
		{"--max-resident", int64(opts.Store.MaxResident), 1, math.MaxInt32, -1, "-1 (no bound) or 1 to 2147483647 (leave the flag out for the default, 8192)"},
		{"--bdi-max-ratio", int64(opts.BDI.MaxRatio), 0, 100, -1, "-1 (leave it) or 0 to 100"},
		{"--bdi-strict-limit", int64(opts.BDI.StrictLimit), 0, 1, -1, "-1 (leave it), 0 or 1"},
		{"--readahead-kb", int64(opts.BDI.ReadaheadKB), 0, math.MaxInt32, -1, "-1 (leave it) or 0 to 2147483647"},
		// Each entry is a pinned daemon thread with a populated payload
		// buffer of up to 1 MiB, on every CPU's queue.
		{"--uring-entries", int64(opts.URingEntries), 1, maxURingEntries, 0, fmt.Sprintf("0 (the default, %d) or 1 to %d", uring.DefaultEntries, maxURingEntries)},
	} {
		if r.v != r.none && (r.v < r.lo || r.v > r.hi) {
			return fs.Options{}, fmt.Errorf("%s %d: out of range; accepted: %s", r.flag, r.v, r.want)
		}
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--attr-timeout", opts.AttrTimeout}, {"--entry-timeout", opts.EntryTimeout}} {
		if d.v < 0 {
			return fs.Options{}, fmt.Errorf("%s %v: must not be negative; accepted: 0 (no caching) or a duration such as 1s", d.flag, d.v)
		}
	}
	if err := checkInjectRules(opts.Inject, opts.Store.PowerCutSim, opts.WritebackCache); err != nil {
		return fs.Options{}, err
	}
	if c.metrics != "" {
		if _, err := loopbackAddr(c.metrics); err != nil {
			return fs.Options{}, err
		}
	}
	if c.logFile != "" {
		abs, err := filepath.Abs(c.logFile)
		if err != nil {
			return fs.Options{}, fmt.Errorf("-o log=%s: %w", c.logFile, err)
		}
		c.logFile = abs
	}
	return opts, nil
}

// splitOptions splits a -o argument at its commas; a backslash escapes a
// comma or a backslash, as go-fuse and libfuse write them.
func splitOptions(s string) []string {
	var out []string
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case s[i] == ',':
			out = append(out, b.String())
			b.Reset()
		default:
			b.WriteByte(s[i])
		}
	}
	return append(out, b.String())
}

// joinInjectRules puts the parts of an -o inject=RULE option back
// together: the options after inject=... whose names are keys of the rule
// language (op, errno, times, fsyncgate, ...; no mount option has one) are
// the rule's, split off at its commas.
func joinInjectRules(opts []string) []string {
	var out []string
	for i := 0; i < len(opts); i++ {
		o := opts[i]
		if strings.HasPrefix(o, "inject=") {
			for i+1 < len(opts) {
				name, _, _ := strings.Cut(opts[i+1], "=")
				if !slices.Contains(inject.Keys, name) {
					break
				}
				i++
				o += "," + opts[i]
			}
		}
		out = append(out, o)
	}
	return out
}

// checkInjectRules refuses a bad --inject rule before anything is
// mounted, naming the rule, the part that is wrong and the valid forms.
func checkInjectRules(rules []string, sim, writebackCache bool) error {
	for _, text := range rules {
		r, err := inject.Parse(text)
		var re *inject.RuleError
		if errors.As(err, &re) {
			return fmt.Errorf("--inject %q: %s (valid: %s)", text, re.Detail(), inject.Forms)
		}
		if err != nil {
			return fmt.Errorf("--inject %q: %w", text, err)
		}
		if r.Fsyncgate && !sim {
			return fmt.Errorf("--inject %q: fsyncgate: %v", text, inject.ErrNeedsSim)
		}
		if r.Short >= 0 && writebackCache {
			return fmt.Errorf("--inject %q: short=%d: %v", text, r.Short, inject.ErrShortWritebackCache)
		}
	}
	return nil
}

// ignoredOptions are the fstab options that are not for the filesystem:
// mount(8)'s and systemd's own, which mount.fuse drops too.
var ignoredOptions = map[string]bool{
	"": true, "_netdev": true, "nofail": true, "auto": true, "noauto": true,
	"user": true, "users": true, "nouser": true, "owner": true, "group": true, "defaults": true,
}

// applyOption applies one -o option: a generic mount option, or a flag of
// f by its name (with "_" read as "-").
func (c *mountConfig) applyOption(f *pflag.FlagSet, o string) error {
	name, value, hasValue := strings.Cut(o, "=")
	if ignoredOptions[name] || strings.HasPrefix(name, "x-") || name == "comment" {
		return nil
	}
	generic := map[string]func(){
		"ro":                  func() { c.opts.ReadOnly = true },
		"rw":                  func() { c.opts.ReadOnly = false },
		"allow_other":         func() { c.opts.AllowOther = true },
		"default_permissions": func() { c.opts.DefaultPermissions = true },
		"dev":                 func() { c.opts.Dev = true },
		"nodev":               func() { c.opts.Dev = false },
		"suid":                func() { c.opts.Suid = true },
		"nosuid":              func() { c.opts.Suid = false },
		"exec":                func() { c.opts.NoExec = false },
		"noexec":              func() { c.opts.NoExec = true },
	}
	if set, ok := generic[name]; ok && !hasValue {
		set()
		return nil
	}
	if name == "log" {
		if value == "" {
			return fmt.Errorf("-o %s: want log=FILE", o)
		}
		c.logFile = value
		return nil
	}
	fl := f.Lookup(strings.ReplaceAll(name, "_", "-"))
	if fl != nil && fl.Name == "profile" {
		c.profileFromO = true
	}
	if fl == nil || fl.Name == "options" || fl.Name == "help" || fl.Name == "foreground" {
		return fmt.Errorf("-o %s: unknown mount option %q (see mmapfs mount --help for the flags, each an option NAME=VALUE)", o, name)
	}
	if !hasValue {
		if fl.Value.Type() != "bool" {
			return fmt.Errorf("-o %s: option %q needs a value (%s=VALUE)", o, name, name)
		}
		value = "true"
	}
	if err := f.Set(fl.Name, value); err != nil {
		return fmt.Errorf("-o %s: %w", o, err)
	}
	return nil
}

// logWriter opens -o log=FILE for appending, or returns w.
func (c *mountConfig) logWriter(w io.Writer) (io.WriteCloser, error) {
	if c.logFile == "" {
		return nopCloser{w}, nil
	}
	f, err := os.OpenFile(c.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("-o log=%s: %w", c.logFile, err)
	}
	return f, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// loopbackAddr binds addr to loopback unless it names a host: "9100" and
// ":9100" become "127.0.0.1:9100".
func loopbackAddr(addr string) (string, error) {
	if !strings.Contains(addr, ":") {
		addr = ":" + addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--metrics %s: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// listenMetrics binds the listener of --metrics addr. It is called before
// mounting, so that a port in use, a bad address or a host that is not
// this machine's refuses the mount instead of failing once it is up.
func listenMetrics(addr string) (net.Listener, error) {
	a, err := loopbackAddr(addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", a)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w (accepted: PORT or HOST:PORT, a free port of an address of this machine)", addr, err)
	}
	return ln, nil
}

// serveMetrics serves the Prometheus endpoint of srv on ln, which
// listenMetrics bound before the mount.
func serveMetrics(ln net.Listener, srv *fs.Server, logger *log.Logger) *http.Server {
	hs := &http.Server{Handler: srv.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}
	// Said before serving, so that whoever can scrape has read where.
	logger.Printf("serving Prometheus metrics at http://%s/metrics", ln.Addr())
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Printf("metrics server at %s: %v", ln.Addr(), err)
		}
	}()
	return hs
}

// runMount mounts store at mountpoint and serves it until it is unmounted
// (by a signal, or by umount from outside), logging to logOut. ready, if
// not nil, is called once the mount is usable and "serving" is logged: a
// background daemon then tells its parent. An error before that is
// returned without calling ready.
func runMount(logOut io.Writer, store, mountpoint string, opts fs.Options, metricsAddr string, ready func()) error {
	logger := log.New(logOut, "mmapfs: ", log.LstdFlags)
	if _, ok := logOut.(syslogWriter); ok {
		// syslog stamps the time and the tag itself.
		logger = log.New(logOut, "", 0)
	}
	opts.Logger = logger
	// Take the signals before mounting, so that one arriving while the
	// mount comes up is not lost (nor kills the daemon with a mount up).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	var ln net.Listener
	if metricsAddr != "" {
		var err error
		if ln, err = listenMetrics(metricsAddr); err != nil {
			return err
		}
	}
	if opts.Store.IgnoreFsync {
		logger.Printf("WARNING: --unsafe-ignore-fsync: fsync and fdatasync will return success without syncing; data they acknowledge can be lost in a power cut")
	}
	if opts.SharedStore {
		logger.Printf("WARNING: --unsafe-shared-store: another daemon may serve %s too; the unsynced-bytes figures, fsync accounting and power-cut simulation of each then miss the other's writes", store)
	}
	srv, err := fs.Mount(store, mountpoint, opts)
	if err != nil {
		if ln != nil {
			err = errors.Join(err, ln.Close())
		}
		return err
	}
	if opts.BDI.MaxRatio < 0 && opts.Profile != "kernel-defaults" {
		if why := fs.CanSetBDI(); why != nil {
			logger.Print(fs.KeptKernelBDI(why))
		}
	}
	if ln != nil {
		hs := serveMetrics(ln, srv, logger)
		defer func() {
			if err := hs.Close(); err != nil {
				logger.Printf("closing the metrics server: %v", err)
			}
		}()
	}
	// Said once the mount is fully usable (fs.Mount has returned): the
	// integration tests wait for this line.
	logger.Printf("serving %s at %s (writeback policy %s, pid %d)", srv.Store().Root(), srv.Mountpoint(), opts.Store.Policy, os.Getpid())
	if ready != nil {
		ready()
	}

	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	signals := 0
	unmounted := false
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
			if unmounted {
				// A second SIGTERM (kill twice, timeout, a double
				// Ctrl-C) after a clean unmount: the daemon is
				// already on its way out; let it finish.
				logger.Printf("%v: %s is already unmounted; syncing the store and exiting", sig, srv.Mountpoint())
				continue
			}
			signals++
			if signals == 1 {
				logger.Printf("%v: unmounting %s", sig, srv.Mountpoint())
				if err := srv.Unmount(); err != nil {
					logger.Print(busyLine(srv.Mountpoint(), err))
					continue
				}
				unmounted = true
				continue
			}
			logger.Printf("%v: detaching %s lazily; exiting when its last open file is closed", sig, srv.Mountpoint())
			if err := srv.UnmountLazy(); err != nil {
				return fmt.Errorf("detaching %s: %w", srv.Mountpoint(), err)
			}
			unmounted = true
		}
	}
}
