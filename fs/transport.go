package fs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mmapfs/mmapfs/fs/uring"
	"github.com/mmapfs/mmapfs/fs/wire"
)

// The transports: how the kernel's requests reach the daemon.
const (
	// TransportDev is go-fuse's /dev/fuse loop: a read for each
	// request, a write for each reply.
	TransportDev = "dev"
	// TransportURing is FUSE over io_uring (package fs/uring): one
	// queue per possible CPU, the reply and the next request in one
	// system call. INIT (answered by go-fuse's fuse.Server), FORGET,
	// INTERRUPT (served by uring.ServeDev) and notifications (written
	// by the fuse.Server) stay on /dev/fuse.
	TransportURing = "uring"
	// TransportAuto is uring where it can be had (the kernel offers
	// it: enable_uring on; the daemon runs as root), dev otherwise; the
	// log and the stats say which.
	TransportAuto = "auto"
)

// TestURingPayloadEnv, for the tests only, makes --transport uring
// register its ring entries with payload buffers of that many bytes
// instead of the connection's largest request. The kernel refuses a
// buffer smaller than that (FUSE_IO_URING_CMD_REGISTER fails with
// EINVAL), after INIT has negotiated io_uring: it is how the integration
// tests drive the daemon's failed-registration path (abort the
// connection, detach the mount, exit with the error) on a real mount.
const TestURingPayloadEnv = "MMAPFS_TEST_URING_PAYLOAD"

// TestURingConnectionEnv, for the tests only, names the directory
// --transport uring aborts the connection through (its "abort" file)
// instead of the connection's own in fusectl: a directory that does not
// exist makes the abort through fusectl fail, as it does where fusectl
// cannot be mounted (a container), which is how the integration tests
// reach the forced unmount that aborts the connection then.
const TestURingConnectionEnv = "MMAPFS_TEST_URING_CONNECTION"

// TestURingNoInitEnv, for the tests only, when not empty, makes a mount
// that chose the uring transport not ask for FUSE_OVER_IO_URING at INIT,
// so that INIT does not negotiate it, as when enable_uring is turned off
// between the daemon's look at it and the mount: how the integration
// tests reach --transport auto's fallback to dev, and uring's refusal,
// then.
const TestURingNoInitEnv = "MMAPFS_TEST_URING_NO_INIT"

// TestURingHandoffDelayEnv, for the tests only, is a duration (as
// time.ParseDuration reads it) that --transport uring's ring entries
// wait before handing a READ they were given to go-fuse
// (uring.Config.HandoffDelay): an INTERRUPT the kernel sends for it
// meanwhile finds no request in flight, which is how the integration
// tests reach the daemon's retrying of such INTERRUPTs on a real mount.
const TestURingHandoffDelayEnv = "MMAPFS_TEST_URING_HANDOFF_DELAY"

// checkTransport refuses a transport the daemon cannot use here, before
// anything is mounted: an unknown name, or uring without the kernel's
// enable_uring (whose message says how to turn it on) or without root
// (only the daemon that mounted /dev/fuse itself has the descriptor the
// rings need; go-fuse keeps fusermount3's to itself).
func checkTransport(name string) error {
	switch name {
	case "", TransportDev, TransportAuto:
		return nil
	case TransportURing:
		return uringAvailable()
	}
	return fmt.Errorf("--transport %q: not dev, uring or auto", name)
}

// uringAvailable says why the uring transport cannot be used here, or
// nil.
func uringAvailable() error {
	if err := uring.Enabled(); err != nil {
		return fmt.Errorf("--transport uring: %w", err)
	}
	if os.Geteuid() != 0 {
		return errors.New("--transport uring needs root: the daemon must mount /dev/fuse itself to hand its descriptor to the rings (go-fuse does not export the one fusermount3 passes it)")
	}
	return nil
}

// resolveTransport turns auto into the transport it stands for here,
// and logs the choice.
func (m *mountState) resolveTransport(name string) string {
	if name != TransportAuto {
		return name
	}
	if err := uringAvailable(); err != nil {
		m.log.Printf("--transport auto: dev (%v)", err)
		return TransportDev
	}
	m.log.Printf("--transport auto: uring (the kernel offers FUSE over io_uring)")
	return TransportURing
}

// startURing starts the io_uring transport of a mount whose INIT the
// fuse.Server server has answered (asking for FUSE_OVER_IO_URING): a
// fuse.ProtocolServer over the same raw file system and options, primed
// with the same INIT, serves the rings' requests. It returns the loop
// the caller must run in place of server.Serve: it serves what still
// comes over /dev/fuse (fd), FORGET and INTERRUPT, with the same
// ProtocolServer (so that an interrupt finds its ring request), and once
// the connection ends cancels what the rings still serve
// (uring.Transport.CancelInFlight, as server.Serve's loop does for its
// own requests) and runs server.Serve to close the server down; the
// server writes the notifications to /dev/fuse as before. mnt is the
// mountpoint, dev the mount's major:minor. On an error the connection is
// aborted (the kernel holds every request back until the rings are
// registered: through fusectl, else by a forced unmount of mnt), the
// server's loop has ended, and the caller must detach the mount; if
// even the forced unmount failed, the error wraps uring.ErrNotAborted,
// nothing was waited for, and the caller must exit, which ends the
// connection. Under --transport auto, an INIT that did not negotiate
// io_uring (nothing is held back then) is logged and served over
// /dev/fuse: the loop returned is server.Serve.
func (m *mountState) startURing(server *fuse.Server, raw fuse.RawFileSystem, mo *fuse.MountOptions, fd int, mnt, dev string) (func(), error) {
	conn, cerr := uring.ConnectionDir(dev)
	if v := os.Getenv(TestURingConnectionEnv); v != "" {
		m.log.Printf("%s=%s: aborting the connection through %s, not %s (for the tests of a failed abort)", TestURingConnectionEnv, v, v, conn)
		conn, cerr = v, nil
	}
	fail := func(err error) error {
		if aerr := uring.AbortConnection(conn, mnt, m.log); aerr != nil {
			// Nothing ends the connection: the server's loop
			// would serve the requests the kernel let go, and
			// waiting for it would hang.
			return errors.Join(err, aerr)
		}
		// The server's loop ends on the aborted connection
		// (ENODEV), and only then can it be waited for.
		go server.Serve()
		server.Wait()
		return err
	}
	ps := fuse.NewProtocolServer(raw, mo)
	reply, err := uring.Prime(ps, server.KernelSettings())
	if err != nil {
		return nil, fail(fmt.Errorf("--transport uring: %w", err))
	}
	if !reply.IOUring() {
		if m.opts.Transport == TransportAuto {
			m.log.Printf("--transport auto: dev (the kernel did not offer FUSE_OVER_IO_URING at INIT; was %s turned off meanwhile?)", uring.EnableParam)
			m.uringChosen.Store(false)
			return server.Serve, nil
		}
		return nil, fail(fmt.Errorf("--transport uring: the kernel did not offer FUSE_OVER_IO_URING at INIT (was %s turned off meanwhile?)", uring.EnableParam))
	}
	if cerr != nil {
		return nil, fail(fmt.Errorf("--transport uring: %w", cerr))
	}
	queues, err := uring.PossibleCPUs()
	if err != nil {
		return nil, fail(fmt.Errorf("--transport uring: %w", err))
	}
	payload := reply.PayloadSize()
	if v := os.Getenv(TestURingPayloadEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, fail(fmt.Errorf("%s=%q: not a positive number of bytes", TestURingPayloadEnv, v))
		}
		m.log.Printf("%s=%d: registering payload buffers of %d bytes, not the connection's %d (for the tests of a failed registration)", TestURingPayloadEnv, n, n, payload)
		payload = n
	}
	var handoff time.Duration
	if v := os.Getenv(TestURingHandoffDelayEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fail(fmt.Errorf("%s=%q: not a positive duration", TestURingHandoffDelayEnv, v))
		}
		m.log.Printf("%s=%v: each ring entry holds a READ that long before go-fuse sees it (for the tests of a lost INTERRUPT)", TestURingHandoffDelayEnv, d)
		handoff = d
	}
	tr, err := uring.Start(uring.Config{
		Dev:          fd,
		Queues:       queues,
		Entries:      m.opts.URingEntries,
		Payload:      payload,
		Handler:      ps,
		Connection:   conn,
		Mountpoint:   mnt,
		Logger:       m.log,
		HandoffDelay: handoff,
	})
	if err != nil {
		err = fmt.Errorf("--transport uring: %w", err)
		if errors.Is(err, uring.ErrNotAborted) {
			return nil, err // see fail
		}
		// Start has aborted the connection.
		go server.Serve()
		server.Wait()
		return nil, err
	}
	m.ring.Store(tr)
	st := tr.Stats()
	m.log.Printf("transport uring: %d queues of %d entries (FUSE over io_uring)", len(st), st[0].Entries)
	return func() {
		ended := true
		// The largest request /dev/fuse could carry, as go-fuse
		// sizes its own buffers: the payload and the headers.
		if err := uring.ServeDev(fd, ps, reply.PayloadSize()+4096); err != nil {
			m.log.Printf("--transport uring: %v; aborting the connection", err)
			if aerr := uring.AbortConnection(conn, mnt, m.log); aerr != nil {
				m.log.Print(aerr)
				ended = false
			}
		}
		if ended {
			// What the rings' entries still serve is cancelled, as
			// server.Serve's loop cancels its own requests on
			// ENODEV, so that Wait does not wait for a request held
			// in the daemon (an injected delay) to run its course.
			// The entries do it too when the kernel ends them, but
			// when every entry is busy only this read sees the end.
			tr.CancelInFlight()
		}
		server.Serve()
	}, nil
}

// transportStats is the transport part of the stats.
func (m *mountState) transportStats() *wire.Transport {
	tr := m.ring.Load()
	if tr == nil {
		if m.uringChosen.Load() {
			// A request the kernel held back until the rings were
			// registered can be served before startURing has
			// stored the transport: it is uring, with no queue
			// figures yet.
			return &wire.Transport{Name: TransportURing}
		}
		return &wire.Transport{Name: TransportDev}
	}
	t := &wire.Transport{Name: TransportURing}
	for _, q := range tr.Stats() {
		t.Queues = append(t.Queues, wire.Queue(q))
	}
	return t
}

// The transport's metrics (metrics.go collects them with the rest).
var (
	descTransport      = desc("transport_info", "How the kernel's requests reach the daemon (mmapfs mount --transport), as a label; always 1.", "transport")
	descURingRequests  = desc("uring_requests_total", "Requests served over io_uring, by queue (the CPU they came from).", "queue")
	descURingBusy      = desc("uring_queue_busy_entries", "Ring entries of the queue serving a request now: the queue depth in use.", "queue")
	descURingEntries   = desc("uring_queue_entries", "Ring entries registered on the queue, each a daemon thread pinned to the queue's CPU.", "queue")
	descURingMaxBusy   = desc("uring_queue_busy_entries_max", "The most entries of the queue that served at once.", "queue")
	descURingUnpinned  = desc("uring_queue_unpinned_entries", "Ring entries of the queue whose thread could not be pinned to its CPU.", "queue")
	descURingAway      = desc("uring_reads_away_total", "READs of 64 KiB or more the queue's entries served off the queue's CPU (readahead, whose reader goes on meanwhile on that CPU).", "queue")
	transportMetricFns = []func(q wire.Queue) (*prometheus.Desc, prometheus.ValueType, float64){
		func(q wire.Queue) (*prometheus.Desc, prometheus.ValueType, float64) {
			return descURingRequests, prometheus.CounterValue, float64(q.Requests)
		},
		func(q wire.Queue) (*prometheus.Desc, prometheus.ValueType, float64) {
			return descURingBusy, prometheus.GaugeValue, float64(q.Busy)
		},
		func(q wire.Queue) (*prometheus.Desc, prometheus.ValueType, float64) {
			return descURingEntries, prometheus.GaugeValue, float64(q.Entries)
		},
		func(q wire.Queue) (*prometheus.Desc, prometheus.ValueType, float64) {
			return descURingMaxBusy, prometheus.GaugeValue, float64(q.MaxBusy)
		},
		func(q wire.Queue) (*prometheus.Desc, prometheus.ValueType, float64) {
			return descURingUnpinned, prometheus.GaugeValue, float64(q.Entries - q.Pinned)
		},
		func(q wire.Queue) (*prometheus.Desc, prometheus.ValueType, float64) {
			return descURingAway, prometheus.CounterValue, float64(q.Away)
		},
	}
)

// collectTransport sends the metrics of the transport t (from the
// stats).
func collectTransport(ch chan<- prometheus.Metric, t *wire.Transport) {
	if t == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descTransport, prometheus.GaugeValue, 1, t.Name)
	for _, q := range t.Queues {
		for _, f := range transportMetricFns {
			d, kind, v := f(q)
			ch <- prometheus.MustNewConstMetric(d, kind, v, strconv.Itoa(q.Queue))
		}
	}
}
