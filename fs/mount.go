package fs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs/inject"
	"github.com/mmapfs/mmapfs/fs/uring"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// Options are the settings of one mount.
type Options struct {
	// Store holds the store's own settings: writeback policy, fsync
	// handling, madvise advice, MAP_POPULATE.
	Store backing.Options

	// Profile names the set of switches the mount was asked for
	// (mmapfs mount --profile), for the stats; the switches themselves
	// are the fields below.
	Profile string
	// KeepCache keeps the kernel's page cache of a file across opens
	// (FOPEN_KEEP_CACHE).
	KeepCache bool
	// AutoCache keeps the kernel's page cache of a file at an open when
	// the file is as the kernel last knew it, and drops it otherwise
	// (autocache.go); KeepCache and DirectIO override it.
	AutoCache bool
	// ExplicitInvalData asks the kernel not to drop a file's cached
	// pages when a GETATTR shows its mtime changed (CAP_EXPLICIT_INVAL_DATA
	// instead of go-fuse's CAP_AUTO_INVAL_DATA). Changes through the mount
	// keep the cache right either way; a change made in the store behind
	// the mount is then not seen by pages already cached, and every read
	// from the cache is cheaper (the kernel no longer checks the
	// attributes before each one).
	ExplicitInvalData bool
	// DirectIO makes the kernel bypass its page cache for reads and
	// writes (FOPEN_DIRECT_IO); shared client mmaps keep working through
	// CAP_DIRECT_IO_ALLOW_MMAP.
	DirectIO bool
	// WritebackCache lets the kernel buffer writes and send them later in
	// larger pieces (CAP_WRITEBACK_CACHE); the kernel then owns size and
	// mtime, and may read through write-only handles.
	WritebackCache bool
	// AttrTimeout and EntryTimeout are how long the kernel may cache
	// attributes and names.
	AttrTimeout, EntryTimeout time.Duration
	// MaxWrite is the largest WRITE (and READ) request, in bytes; 0
	// means go-fuse's default (128 KiB).
	MaxWrite int
	// MaxReadahead caps the kernel's readahead, in bytes; 0 means the
	// kernel's default.
	MaxReadahead int
	// ReadOnly mounts read-only.
	ReadOnly bool
	// AllowOther lets users other than the one who mounted use the
	// mount; it turns on default_permissions, so that the kernel checks
	// file modes.
	AllowOther bool
	// DefaultPermissions makes the kernel check file modes before it
	// sends a request (default_permissions), without AllowOther too.
	DefaultPermissions bool
	// Dev and Suid mount without nodev and nosuid (mount(8)'s dev and
	// suid; allowed to root only); NoExec mounts with noexec. By default
	// a mount is nodev and nosuid, as every FUSE mount.
	Dev, Suid, NoExec bool
	// SharedStore lets another daemon serve the same store at the same
	// time (see storelock.go: it takes the store lock shared, or not at
	// all if an ordinary daemon holds it): each daemon's unsynced-bytes
	// ledger, power-cut simulation and kernel caches then miss the
	// other's writes.
	SharedStore bool
	// BDI changes the mount's backing-device limits (as root): see bdi.go.
	BDI BDISettings
	// Inject are fault-injection rules (fs/inject's language, one per
	// string), in force from the start; the control file adds and clears
	// rules while mounted. A bad rule refuses the mount.
	Inject []string
	// Transport is how the kernel's requests reach the daemon:
	// TransportDev ("" too), TransportURing or TransportAuto
	// (transport.go).
	Transport string
	// URingEntries is how many ring entries (threads) each io_uring
	// queue has; 0 means uring.DefaultEntries.
	URingEntries int
	// Debug logs every FUSE request and reply (go-fuse's request log).
	Debug bool
	// Logger receives the daemon's log lines; nil means stderr.
	Logger *log.Logger
}

// DefaultOptions are the settings `mmapfs mount` uses without flags.
func DefaultOptions() Options {
	return Options{AutoCache: true, AttrTimeout: time.Second, EntryTimeout: time.Second, BDI: NoBDIChanges}
}

// mountState is what every node and handle of one mount shares. All of it
// is read only once Mount returns.
type mountState struct {
	store     *backing.Store
	rootDev   uint64 // st_dev of the store root (see stableAttr)
	asRoot    bool   // the daemon runs as root: created files get the caller's owner
	openFlags uint32 // FOPEN_* flags for every open
	opts      Options
	dev       atomic.Pointer[string] // major:minor of the mount, for its bdi; set once serving
	dirs      *dirCache              // descriptors of directories (safe for concurrent use)
	log       *log.Logger
	started   time.Time
	stats     counters
	cut       powerCut    // safe for concurrent use
	trace     *reqTracer  // the request record for mmapfs trace (reqtrace.go); safe for concurrent use
	inj       *inject.Set // fault-injection rules (injecthooks.go); safe for concurrent use
	cache     autoCache   // what the kernel's cache of each file is of (autocache.go); safe for concurrent use

	// The io_uring transport; nil with --transport dev (transport.go),
	// and under uring until the rings are registered.
	ring atomic.Pointer[uring.Transport]
	// uringChosen says the mount is served over io_uring (--transport
	// uring, or auto where it could be had), from before the rings are
	// registered; written once by serve before the mount exists.
	uringChosen atomic.Bool
}

// stableAttr computes a node's identity from the statx of its store
// file: the inode number is the store's, with st_dev mixed in so that
// files of another filesystem mounted inside the store (whose device
// differs from rootDev) do not collide, and the generation is the birth
// time in nanoseconds (1 when the filesystem has none), which tells a
// recycled inode number from the file that had it. The numbers are the
// ones go-fuse's loopback gives (LoopbackRoot.idFromStat, genFromBtime,
// checked by TestStableAttrAsLoopback), which the namespace was until
// Node stood on go-fuse's Inode itself: clients see the same inode
// numbers as before. Every node of the tree is made with it (childAt,
// newChild), so a file created is the same inode a later lookup finds.
func (m *mountState) stableAttr(x *unix.Statx_t) gofs.StableAttr {
	dev := unix.Mkdev(x.Dev_major, x.Dev_minor)
	swapped := (dev << 32) | (dev >> 32)
	swappedRootDev := (m.rootDev << 32) | (m.rootDev >> 32)
	gen := uint64(1)
	if x.Mask&unix.STATX_BTIME != 0 && (x.Btime.Sec != 0 || x.Btime.Nsec != 0) {
		gen = uint64(x.Btime.Sec)*1e9 + uint64(x.Btime.Nsec)
	}
	return gofs.StableAttr{
		Mode: uint32(x.Mode),
		Gen:  gen,
		Ino:  (swapped ^ swappedRootDev) ^ x.Ino,
	}
}

// Server is a live mount.
type Server struct {
	m          *mountState
	server     *fuse.Server
	store      *backing.Store
	mountpoint string
	fdMount    bool     // mounted by mountFuseFd (as root): unmounted here, not by go-fuse
	lock       *os.File // holds the store lock until Wait closes it; nil if SharedStore found it held

	unmounted atomic.Bool // Unmount succeeded: the mount is gone
}

// Mountpoint returns the absolute path the store is mounted at.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Stats returns the mount's figures now, as the stats file has them.
func (s *Server) Stats() (*wire.Snapshot, error) { return s.m.snapshot() }

// Store returns the mount's blob store.
func (s *Server) Store() *backing.Store { return s.store }

// PowerCut is closed once the power was cut through the control file
// (and the client that asked has closed it, or cutGrace has passed): the
// caller should then Drop the mount instead of waiting for it.
func (s *Server) PowerCut() <-chan struct{} { return s.m.cut.done }

// Drop ends the mount as a crash would, after a power cut: it detaches the
// mountpoint lazily and does not sync or close the store (the process is
// expected to exit; its exit closes the FUSE connection, and what is still
// open on the mount gets ENOTCONN).
func (s *Server) Drop() error {
	return detach(s.mountpoint)
}

// Wait blocks until the mount is gone (unmounted by Unmount, by
// fusermount3 -u or umount), then syncs and closes the store.
func (s *Server) Wait() error {
	s.server.Wait()
	var terr error
	if tr := s.m.ring.Load(); tr != nil {
		terr = tr.Wait()
	}
	s.m.trace.close()
	// No client is left to see what a rule does: the store's last sync
	// is a real one, so that the store is left as the mount wrote it.
	if n, _ := s.m.inj.Clear(0); n > 0 {
		s.m.log.Printf("inject: the mount is gone; %s cleared before the store's last sync", wire.Plural(n, "rule", "rules"))
	}
	errs := []error{terr, s.m.dirs.close()}
	if err := s.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing store %s: %w", s.store.Root(), err))
	}
	// Released only once the store is synced and closed, so that a new
	// daemon never maps it while this one still syncs.
	if s.lock != nil {
		if err := s.lock.Close(); err != nil {
			errs = append(errs, fmt.Errorf("releasing the lock of store %s: %w", s.store.Root(), err))
		}
	}
	return errors.Join(errs...)
}

// dirCacheSize bounds the cached directory descriptors. With the store's
// resident blobs (8192 by default) it keeps the daemon well inside a
// 20,000-descriptor limit.
const dirCacheSize = 2048

// Unmount asks the kernel to unmount; it fails with EBUSY while files are
// open on the mount. Wait returns once the mount is gone. Once it has
// succeeded, Unmount does nothing and returns nil.
func (s *Server) Unmount() error {
	if s.unmounted.Load() {
		return nil
	}
	// A stats file being rendered is a file open on the mount.
	s.store.InterruptStats()
	if !s.fdMount {
		if err := s.server.Unmount(); err != nil {
			return fmt.Errorf("unmount %s: %w", s.mountpoint, err)
		}
		s.unmounted.Store(true)
		return nil
	}
	// go-fuse cannot unmount a "/dev/fd/N" mount (it does not know
	// where it is): unmount it here and, as go-fuse does, wait for the
	// serve loops to end.
	if err := unmountFd(s.mountpoint); err != nil {
		return err
	}
	s.unmounted.Store(true)
	s.server.Wait()
	return nil
}

// UnmountLazy detaches the mount now (umount -l); the daemon keeps serving
// the files still open on it and Wait returns once they are closed. A mount
// already gone (unmounted by Unmount, or by umount from outside) is not an
// error.
func (s *Server) UnmountLazy() error {
	if s.unmounted.Load() {
		return nil
	}
	s.store.InterruptStats()
	err := detach(s.mountpoint)
	if errors.Is(err, syscall.EINVAL) {
		still, serr := s.stillMounted()
		if serr == nil && !still {
			return nil
		}
		return errors.Join(err, serr)
	}
	return err
}

// stillMounted reports whether this server's mount is still at its
// mountpoint (the topmost mount there is a fuse.mmapfs mount of its store).
func (s *Server) stillMounted() (bool, error) {
	mi, ok, err := findMount(s.mountpoint)
	return ok && mi.fstype == "fuse.mmapfs" && mi.source == s.store.Root(), err
}

func detach(mnt string) error {
	err := unix.Unmount(mnt, unix.MNT_DETACH)
	if errors.Is(err, syscall.EPERM) {
		if out, ferr := exec.Command("fusermount3", "-u", "-z", mnt).CombinedOutput(); ferr != nil {
			return fmt.Errorf("unmount %s: %w (fusermount3: %s)", mnt, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", mnt, err)
	}
	return nil
}

// detachIfMounted detaches mnt if it is still a mount point: a forced
// unmount that aborted a connection may have taken the mount already.
func detachIfMounted(mnt string) error {
	_, ok, err := findMount(mnt)
	if err != nil {
		return fmt.Errorf("unmount %s: %w", mnt, err)
	}
	if !ok {
		return nil
	}
	return detach(mnt)
}

// Mount mounts the store directory at mountpoint and serves it in the
// background. The store is created if it does not exist. The mount is
// ready when Mount returns.
func Mount(store, mountpoint string, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = log.New(os.Stderr, "mmapfs: ", log.LstdFlags)
	}
	inj, err := newInjectSet(opts, time.Now().UnixNano())
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("no FUSE device /dev/fuse (load the fuse module, or give the container the device): %w", err)
	}
	mnt, err := checkMountpoint(mountpoint, logger)
	if err != nil {
		return nil, err
	}
	root, err := prepareStore(store, mnt)
	if err != nil {
		return nil, err
	}
	lock, err := lockStore(root, opts.SharedStore, logger.Printf)
	if err != nil {
		return nil, err
	}
	unlock := func() error {
		if lock == nil {
			return nil
		}
		if err := lock.Close(); err != nil {
			return fmt.Errorf("releasing the lock of store %s: %w", root, err)
		}
		return nil
	}
	opts.Store.Inject = storeInject(inj, logger.Printf)
	st, err := backing.Open(root, opts.Store)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("store %s: %w", root, err), unlock())
	}
	opts.Logger = logger
	m, err := newMountState(st, opts)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("store %s: %w", root, err), st.Close(), unlock())
	}
	m.inj = inj
	for _, r := range inj.List() {
		logger.Printf("inject: rule #%d %q in force", r.ID, r.Rule)
	}
	server, fdMount, err := m.serve(mnt, root)
	if err != nil {
		err = fmt.Errorf("mount %s at %s: %w", root, mnt, err)
		if os.Geteuid() != 0 {
			if _, lerr := exec.LookPath("fusermount3"); lerr != nil {
				err = fmt.Errorf("%w (not root, and no fusermount3: install Debian's fuse3)", err)
			} else {
				err = fmt.Errorf("%w (not root: mounting went through fusermount3, which refused; its reason is above)", err)
			}
		}
		return nil, errors.Join(err, st.Close(), unlock())
	}
	return &Server{m: m, server: server, store: st, mountpoint: mnt, fdMount: fdMount, lock: lock}, nil
}

// newMountState makes the state of a mount of st with opts (whose Logger
// is set).
func newMountState(st *backing.Store, opts Options) (*mountState, error) {
	var rst unix.Stat_t
	if err := unix.Fstat(st.RootFd(), &rst); err != nil {
		return nil, pathErr("fstat", st.Root(), err)
	}
	m := &mountState{
		store:   st,
		rootDev: rst.Dev,
		asRoot:  os.Geteuid() == 0,
		opts:    opts,
		log:     opts.Logger,
		started: time.Now(),
		dirs:    newDirCache(dirCacheSize),
		cut:     powerCut{done: make(chan struct{})},
		trace:   newReqTracer(opts.Logger, traceRing),
		inj:     inject.NewSet(time.Now().UnixNano(), opts.Store.PowerCutSim), // Mount gives it the store's
	}
	if opts.KeepCache {
		m.openFlags |= fuse.FOPEN_KEEP_CACHE
	}
	if opts.DirectIO {
		m.openFlags |= fuse.FOPEN_DIRECT_IO
	}
	return m, nil
}

// rawFS returns the protocol-level filesystem the mount serves: the node
// tree from a new root Node, under killprivFS, under the op counters.
func (m *mountState) rawFS() fuse.RawFileSystem {
	attr, entry := m.opts.AttrTimeout, m.opts.EntryTimeout
	fopts := &gofs.Options{
		AttrTimeout:  &attr,
		EntryTimeout: &entry,
		Logger:       m.opts.Logger,
		// Show mode 0000 as 0000: go-fuse would show it as 0644.
		NullPermissions: true,
	}
	return &countingFS{RawFileSystem: &killprivFS{gofs.NewNodeFS(&Node{m: m}, fopts)}, c: &m.stats, t: m.trace}
}

// serve mounts the node tree at mnt with the kernel switches of m.opts,
// and starts serving. Every request goes through m's op counters. fdMount
// says the mount was made by mountFuseFd, so that the caller unmounts it
// itself. The mount is fully usable when serve returns.
func (m *mountState) serve(mnt, root string) (server *fuse.Server, fdMount bool, err error) {
	opts := m.opts
	if err := checkTransport(opts.Transport); err != nil {
		return nil, false, err
	}
	useURing := m.resolveTransport(opts.Transport) == TransportURing
	m.uringChosen.Store(useURing)
	mo := fuse.MountOptions{
		FsName:       root,
		Name:         "mmapfs",
		Debug:        opts.Debug,
		Logger:       opts.Logger,
		MaxWrite:     opts.MaxWrite,
		MaxReadAhead: opts.MaxReadahead,
		AllowOther:   opts.AllowOther,
		// The data path is the mapping: never hand the kernel the
		// blob's descriptor to read and write behind the daemon.
		DisabledCapabilities: fuse.CAP_PASSTHROUGH,
	}
	if opts.WritebackCache {
		mo.ExtraCapabilities |= fuse.CAP_WRITEBACK_CACHE
	}
	if opts.DirectIO {
		mo.ExtraCapabilities |= fuse.CAP_DIRECT_IO_ALLOW_MMAP
	}
	mo.ExplicitDataCacheControl = opts.ExplicitInvalData
	if opts.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	if opts.AllowOther || opts.DefaultPermissions {
		mo.Options = append(mo.Options, "default_permissions")
	}
	for _, f := range []struct {
		on   bool
		name string
	}{{opts.Dev, "dev"}, {opts.Suid, "suid"}, {opts.NoExec, "noexec"}} {
		if f.on {
			mo.Options = append(mo.Options, f.name)
		}
	}
	// The kernel leaves clearing setuid/setgid to the daemon, so that
	// it need not ask for security.capability before every write.
	mo.ExtraCapabilities |= fuse.CAP_HANDLE_KILLPRIV_V2
	if useURing {
		mo.ExtraCapabilities |= fuse.CAP_OVER_IO_URING
		if os.Getenv(TestURingNoInitEnv) != "" {
			opts.Logger.Printf("%s set: not asking for FUSE_OVER_IO_URING at INIT (for the tests of an INIT that did not negotiate it)", TestURingNoInitEnv)
			mo.ExtraCapabilities &^= fuse.CAP_OVER_IO_URING
		}
	}
	raw := m.rawFS()

	// As root, mount /dev/fuse here and give go-fuse the descriptor
	// (see fdmount.go: no poll hack, so a SIGKILL at any point of the
	// start-up cannot leave the daemon stuck in the kernel). Not root,
	// only fusermount3 can mount: that goes through go-fuse as before,
	// poll hack included, and keeps its short window in which a SIGKILL
	// can leave the daemon in D state until the connection is aborted.
	target := mnt
	devFd := -1
	unmount := func() error { return nil }
	if os.Geteuid() == 0 {
		fd, err := mountFuseFd(mnt, fdMountOptions{
			source:   root,
			name:     mo.Name,
			maxRead:  effectiveMaxWrite(mo.MaxWrite),
			options:  mo.Options,
			allowAll: mo.AllowOther,
		})
		switch {
		case err == nil:
			devFd = fd
			target = "/dev/fd/" + strconv.Itoa(fd)
			fdMount = true
			unmount = func() error { return unmountFd(mnt) }
		case errors.Is(err, syscall.EPERM) && useURing && opts.Transport == TransportAuto:
			// auto means dev where uring cannot be had: through
			// fusermount3, whose descriptor go-fuse keeps.
			opts.Logger.Printf("--transport auto: dev (%v: without CAP_SYS_ADMIN only fusermount3 can mount, and go-fuse keeps its descriptor); mounting through fusermount3", err)
			useURing = false
			m.uringChosen.Store(false)
			mo.ExtraCapabilities &^= fuse.CAP_OVER_IO_URING
		case errors.Is(err, syscall.EPERM) && useURing:
			return nil, false, fmt.Errorf("--transport uring: %w (without CAP_SYS_ADMIN only fusermount3 can mount, and go-fuse keeps its descriptor)", err)
		case errors.Is(err, syscall.EPERM):
			// Root without CAP_SYS_ADMIN (a container): let go-fuse
			// try fusermount3, as for any other user.
			opts.Logger.Printf("%v; mounting through fusermount3", err)
		default:
			return nil, false, err
		}
	}
	server, err = fuse.NewServer(raw, target, &mo)
	if err != nil {
		// NewServer has closed the descriptor, which aborted the
		// connection: detach the dead mount.
		if fdMount {
			err = errors.Join(err, detach(mnt))
		}
		return nil, false, err
	}
	if !fdMount {
		unmount = server.Unmount
	}
	// The mount exists now and INIT is answered, but nothing is served
	// before Serve runs: set the mount's bdi here, so that no request is
	// served before its limits are in force (and the stats know the
	// device from the first read on).
	serveLoop := server.Serve // with uring, startURing's loop
	var dev string
	mi, ok, berr := findMount(mnt)
	if ok {
		dev = mi.dev
		m.dev.Store(&dev)
	}
	if useURing && berr == nil && !ok {
		berr = fmt.Errorf("mount %s is not in the mount table", mnt)
	}
	if berr == nil {
		// Under uring too, before the rings are registered: the
		// kernel lets the requests it held back go at once.
		berr = applyBDI(dev, opts.BDI, opts.Logger)
	}
	if useURing {
		// The kernel holds every request back until the rings are
		// registered: nothing may touch the mount before.
		if berr != nil {
			// The device unknown (no fusectl directory to abort
			// through) or its bdi refused: a forced unmount aborts
			// the connection (busy or not; a detach does not end
			// it while a process waits on the mount), then the
			// detach takes what is left, and go-fuse's loop ends.
			if aerr := uring.AbortByUnmount(mnt); aerr != nil {
				// Nothing ends the connection but the
				// daemon's exit: do not wait for the loop.
				return nil, false, errors.Join(berr, aerr, detachIfMounted(mnt))
			}
			berr = errors.Join(berr, detachIfMounted(mnt))
			go server.Serve()
			server.Wait()
			return nil, false, berr
		}
		loop, err := m.startURing(server, raw, &mo, devFd, mnt, dev)
		if err != nil {
			// The connection is aborted (or, if even that failed,
			// ends as the daemon exits): detach the dead mount,
			// if the forced unmount has not already taken it.
			return nil, false, errors.Join(err, detachIfMounted(mnt))
		}
		serveLoop = loop
	}
	ignoreUmask() // requests carry modes the caller's umask already masked (creds.go)
	go serveLoop()
	// A no-op for the "/dev/fd/N" mount; with fusermount3, go-fuse's
	// poll hack.
	if err := server.WaitMount(); err != nil {
		return nil, false, errors.Join(err, berr, unmount())
	}
	if berr != nil {
		return nil, false, errors.Join(berr, unmount())
	}
	return server, fdMount, nil
}

// checkMountpoint returns the absolute, symlink-free mountpoint, or an error
// that names it and says what is wrong. A dead mmapfs mount left there by a
// killed daemon is detached: one that answers ENOTCONN, or, served over
// io_uring, ECONNABORTED or ECANCELED in the milliseconds after its daemon
// died, while the kernel tears the dead daemon's rings down before it
// aborts the connection (fs/fuse/dev_uring.c: fuse_uring_send_in_task;
// fuse_dev_end_requests at the abort).
func checkMountpoint(mountpoint string, logger *log.Logger) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	fi, err := os.Stat(abs)
	if errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ECANCELED) {
		mi, ok, ferr := findMount(abs)
		if ferr != nil {
			return "", fmt.Errorf("mountpoint %s is a dead FUSE mount (its daemon is gone): %w", abs, ferr)
		}
		if !ok || mi.fstype != "fuse.mmapfs" {
			return "", fmt.Errorf("mountpoint %s is a dead FUSE mount (its daemon is gone); unmount it with fusermount3 -u %s", abs, abs)
		}
		logger.Printf("mountpoint %s holds a dead mmapfs mount of %s (its daemon was killed); detaching it", abs, mi.source)
		if err := detach(abs); err != nil {
			return "", fmt.Errorf("mountpoint %s is a dead mmapfs mount that could not be detached: %w", abs, err)
		}
		fi, err = os.Stat(abs)
	}
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("mountpoint %s does not exist", abs)
	}
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", abs, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("mountpoint %s is not a directory", abs)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", abs, err)
	}
	mi, ok, err := findMount(real)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", real, err)
	}
	if ok {
		return "", fmt.Errorf("mountpoint %s is already a mount point (%s of %s); unmount it first", real, mi.fstype, mi.source)
	}
	return real, nil
}

// prepareStore creates the store if needed, checks that it can be read and
// that it and the mountpoint do not contain each other, and returns its
// absolute, symlink-free path.
func prepareStore(store, mnt string) (string, error) {
	abs, err := filepath.Abs(store)
	if err != nil {
		return "", fmt.Errorf("store %s: %w", store, err)
	}
	// Check before creating anything, so that a store inside the
	// mountpoint is not created there.
	if err := checkDisjoint(abs, mnt); err != nil {
		return "", err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", fmt.Errorf("cannot create store %s: %w", abs, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("store %s: %w", abs, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("store %s: %w", real, err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("store %s is not a directory", real)
	}
	if err := checkDisjoint(real, mnt); err != nil {
		return "", err
	}
	d, err := os.Open(real)
	if err != nil {
		return "", fmt.Errorf("cannot read store %s: %w", real, err)
	}
	_, rerr := d.Readdirnames(1)
	cerr := d.Close()
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		return "", fmt.Errorf("cannot read store %s: %w", real, rerr)
	}
	if cerr != nil {
		return "", fmt.Errorf("cannot read store %s: %w", real, cerr)
	}
	return real, nil
}

func checkDisjoint(store, mnt string) error {
	switch {
	case store == mnt:
		return fmt.Errorf("store %s and mountpoint %s are the same directory", store, mnt)
	case within(store, mnt):
		return fmt.Errorf("store %s is inside mountpoint %s", store, mnt)
	case within(mnt, store):
		return fmt.Errorf("mountpoint %s is inside store %s", mnt, store)
	}
	return nil
}

// within reports whether path p is strictly below dir.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

// mountInfo is one mount of the mount table.
type mountInfo struct{ mountpoint, source, fstype, dev string }

// mountTable is the table of the daemon's mount namespace.
const mountTable = "/proc/self/mountinfo"

// readMounts reads the mount table.
func readMounts() ([]mountInfo, error) {
	f, err := os.Open(mountTable)
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	mounts, err := parseMounts(f)
	if cerr := f.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("reading the mount table %s: %w", mountTable, err)
	}
	return mounts, nil
}

// parseMounts parses a mount table in the form of /proc/PID/mountinfo,
// one mount a line, in the order mounted (proc(5)):
//
//	id parent maj:min root mountpoint options [optional...] - fstype source superopts
//
// with the mountpoint and the source unescaped. A line without those
// fields is skipped.
func parseMounts(r io.Reader) ([]mountInfo, error) {
	var mounts []mountInfo
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		for i := 6; i+2 < len(fields); i++ {
			if fields[i] == "-" {
				mounts = append(mounts, mountInfo{
					mountpoint: unescapeMount(fields[4]),
					fstype:     fields[i+1],
					source:     unescapeMount(fields[i+2]),
					dev:        fields[2],
				})
				break
			}
		}
	}
	return mounts, sc.Err()
}

// findMount looks mnt up in the mount table: the last mount on a path is
// the one in effect.
func findMount(mnt string) (mountInfo, bool, error) {
	mounts, err := readMounts()
	if err != nil {
		return mountInfo{}, false, err
	}
	mi, ok := topMount(mounts, mnt)
	return mi, ok, nil
}

// topMount returns the last of mounts at mnt.
func topMount(mounts []mountInfo, mnt string) (mountInfo, bool) {
	for i := len(mounts) - 1; i >= 0; i-- {
		if mounts[i].mountpoint == mnt {
			return mounts[i], true
		}
	}
	return mountInfo{}, false
}

// MountEntry is one mount of the mount table, as the CLI needs it.
type MountEntry struct {
	Mountpoint, FSType, Source string
}

// MountHolding returns the mount in effect at path (absolute, symlinks
// resolved, as the kernel lists mountpoints): the topmost of the mounts
// whose mountpoint is path or a directory above it, and whether there is
// one.
func MountHolding(path string) (MountEntry, bool, error) {
	mounts, err := readMounts()
	if err != nil {
		return MountEntry{}, false, err
	}
	var e MountEntry
	found := false
	for _, mi := range mounts {
		// The last of the longest match: the topmost mount there.
		holds := path == mi.mountpoint || mi.mountpoint == "/" || strings.HasPrefix(path, mi.mountpoint+"/")
		if holds && (!found || len(mi.mountpoint) >= len(e.Mountpoint)) {
			e, found = MountEntry{Mountpoint: mi.mountpoint, FSType: mi.fstype, Source: mi.source}, true
		}
	}
	return e, found, nil
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
