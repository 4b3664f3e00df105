// Package wire is what the daemon's own files say: the figures of the
// stats file (.mmapfs-stats) and the requests and answers of the control
// file (.mmapfs-control), as Go types and as JSON.
//
// # One list of figures
//
// Every number of the stats file is one Figure of one list, defined in
// this file by one call of define. The list drives everything that shows
// the figures: the keys of the stats file (and their order), the
// Prometheus metrics of --metrics, the rows of `mmapfs stats` and the
// columns of `mmapfs stats --watch`. A new figure is one entry here plus
// the code that measures it: a count of events with Counters.Add (the
// store's counters are Counters), a level looked up when the stats are
// gathered with Values.Set. What is not a number (the settings, the
// files at risk, the latency summaries, the FUSE ops) has its own type in
// stats.go.
//
// The package imports neither go-fuse nor the store, so that the store
// (which measures most figures), the FUSE side and the CLI (which only
// reads the files) all use it.
package wire

// Kind says how a figure moves.
type Kind uint8

const (
	// Counter only grows from 0 at the mount. Its Prometheus name ends
	// in _total; its --watch column is a rate (or, Delta, the increase
	// over the interval).
	Counter Kind = iota
	// Gauge is a level now; its --watch column is the level.
	Gauge
)

// Unit is what a figure counts.
type Unit uint8

const (
	// Count counts things: calls, files, errors.
	Count Unit = iota
	// Bytes are shown in binary units (KiB, MiB).
	Bytes
	// Seconds are kept in nanoseconds (Values.Set takes a
	// time.Duration's nanoseconds) and shown in seconds.
	Seconds
)

// ID names one figure of the list: its index.
type ID int

// Figure is one number of a mount and where it shows. Only Key, Help,
// Unit and Kind are required; each of the others puts it somewhere.
type Figure struct {
	// Key is its key in the stats file. "a.b" is the key b of the object
	// a at the top level; the figures of one object are consecutive.
	Key string
	// Help says what it is, in one sentence; it is the Prometheus help.
	Help string
	Unit Unit
	Kind Kind
	// Metric is its Prometheus name after "mmapfs_" ("" for none).
	// Figures may share a Metric if each has a Label: a label's name and
	// this figure's value of it.
	Metric string
	Label  [2]string
	// Row is the label of the row of `mmapfs stats` that shows it (""
	// for none). Part is its text in that row: a fmt format with one
	// verb, which gets the value as an int64 for Count, its binary units
	// (a string) for Bytes, a float64 of seconds for Seconds; "" shows
	// the value alone (Seconds as a duration, to the second). A row's
	// parts are joined in the order of the list.
	Row, Part string
	// Quiet figures show in their row only when they are not 0; a row
	// of quiet figures only (error counts) comes after the others.
	Quiet bool
	// Last is the key, beside this one in the stats file, of the message
	// of the last error this figure counts ("" for none); the row shows
	// it after the count.
	Last string
	// Watch puts it in a column of `mmapfs stats --watch`.
	Watch Column
}

// Column is a figure's column of `mmapfs stats --watch`.
type Column struct {
	// At orders the columns, from 1 (0: no column). The first column,
	// FUSE requests per second, is not a figure and comes before all.
	At int
	// Title heads the column; the unit is added to it (" MiB/s", "/s",
	// " MiB", " s").
	Title string
	// Delta shows a counter's increase over the interval instead of its
	// rate.
	Delta bool
}

var list []Figure

// define adds f to the list and returns its ID.
func define(f Figure) ID {
	list = append(list, f)
	return ID(len(list) - 1)
}

// Figures returns the list, in the order of the stats file. The caller
// must not change it.
func Figures() []Figure { return list }

// Figure returns the figure id names.
func (id ID) Figure() *Figure { return &list[id] }

// The figures, in the order of the stats file.
var (
	Uptime = define(Figure{Key: "uptime_seconds", Help: "Time since the mount.",
		Unit: Seconds, Kind: Gauge, Row: "uptime"})
	UnsyncedBytes = define(Figure{Key: "unsynced_bytes", Help: "Bytes the daemon wrote into mappings and has not msynced.",
		Unit: Bytes, Kind: Gauge, Metric: "unsynced_bytes", Row: "unsynced", Watch: Column{At: 5, Title: "unsynced"}})
	OldestUnsynced = define(Figure{Key: "oldest_unsynced_seconds", Help: "Age of the oldest unsynced write.",
		Unit: Seconds, Kind: Gauge, Metric: "oldest_unsynced_seconds", Row: "unsynced", Part: ", the oldest written %.1fs ago", Quiet: true, Watch: Column{At: 6, Title: "oldest"}})
	MsyncCalls = define(Figure{Key: "msync_calls", Help: "msync(MS_SYNC) and fdatasync calls that synced data.",
		Unit: Count, Kind: Counter, Metric: "msync_calls_total", Row: "msync", Part: "%d calls", Watch: Column{At: 3, Title: "msync"}})
	MsyncBytes = define(Figure{Key: "msync_bytes", Help: "Bytes those calls covered.",
		Unit: Bytes, Kind: Counter, Metric: "msync_bytes_total", Row: "msync", Part: ", %s", Watch: Column{At: 4, Title: "msync"}})
	AsyncCalls = define(Figure{Key: "async_writeback_calls", Help: "Writebacks started without waiting (async policy).",
		Unit: Count, Kind: Counter, Metric: "async_writeback_calls_total", Row: "async writeback", Part: "%d calls"})
	AsyncBytes = define(Figure{Key: "async_writeback_bytes", Help: "Bytes those writebacks covered.",
		Unit: Bytes, Kind: Counter, Row: "async writeback", Part: ", %s"})
	IgnoredFsyncs = define(Figure{Key: "ignored_fsyncs", Help: "fsyncs answered without syncing (--unsafe-ignore-fsync).",
		Unit: Count, Kind: Counter, Metric: "ignored_fsyncs_total", Row: "ignored fsyncs"})
	PassErrors = define(Figure{Key: "periodic_pass_errors", Help: "Periodic passes that failed.",
		Unit: Count, Kind: Counter, Row: "periodic pass errors", Quiet: true, Last: "last_pass_error"})
	Mappings = define(Figure{Key: "mappings", Help: "Mappings live now.",
		Unit: Count, Kind: Gauge, Metric: "mappings", Row: "mappings"})
	MappedBytes = define(Figure{Key: "mapped_bytes", Help: "Address space mapped now.",
		Unit: Bytes, Kind: Gauge, Metric: "mapped_bytes", Row: "mappings", Watch: Column{At: 7, Title: "mapped"}})
	ResidentBytes = define(Figure{Key: "resident_bytes", Help: "Bytes of the open blobs' files in the page cache now, over their mapped ranges (cachestat; mincore before Linux 6.5).",
		Unit: Bytes, Kind: Gauge, Metric: "resident_bytes", Row: "mappings", Watch: Column{At: 8, Title: "resident"}})
	OpenBlobs = define(Figure{Key: "open_blobs", Help: "Blobs open now (by a handle, or kept for a periodic pass).",
		Unit: Count, Kind: Gauge, Metric: "open_blobs", Row: "mappings"})
	ResidentBlobs = define(Figure{Key: "resident_blobs", Help: "Blobs with a descriptor and a mapping now.",
		Unit: Count, Kind: Gauge, Metric: "resident_blobs", Row: "resident blobs"})
	MaxResident = define(Figure{Key: "max_resident", Help: "The bound on resident blobs (--max-resident); 0 when blobs cannot be dropped.",
		Unit: Count, Kind: Gauge, Row: "resident blobs"})
	Evictions = define(Figure{Key: "evictions", Help: "Blobs unmapped and closed to stay within --max-resident.",
		Unit: Count, Kind: Counter, Metric: "evictions_total", Row: "resident blobs"})
	Reopens = define(Figure{Key: "reopens", Help: "Blobs reopened by handle after being dropped.",
		Unit: Count, Kind: Counter, Metric: "reopens_total", Row: "resident blobs"})
	EvictErrors = define(Figure{Key: "evict_errors", Help: "Errors while dropping a blob (it stayed resident).",
		Unit: Count, Kind: Counter, Row: "drop errors", Quiet: true, Last: "last_evict_error"})
	BlobsOpened = define(Figure{Key: "blobs_opened", Help: "Blobs opened (first opens, not shared ones).",
		Unit: Count, Kind: Counter})
	Remaps = define(Figure{Key: "remaps", Help: "mremaps done to grow a mapping.",
		Unit: Count, Kind: Counter, Metric: "remaps_total", Row: "remaps"})
	Faults = define(Figure{Key: "faults", Help: "Faults on a mapping turned into errors or retries.",
		Unit: Count, Kind: Counter, Metric: "faults_total", Row: "faults to errors", Watch: Column{At: 9, Title: "faults", Delta: true}})
	MadviseErrors = define(Figure{Key: "madvise_errors", Help: "madvise calls the kernel refused.",
		Unit: Count, Kind: Counter, Row: "madvise errors", Quiet: true})
	BytesRead = define(Figure{Key: "bytes_read", Help: "Bytes read through the mount.",
		Unit: Bytes, Kind: Counter, Metric: "read_bytes_total", Row: "read / written", Watch: Column{At: 1, Title: "rd"}})
	BytesWritten = define(Figure{Key: "bytes_written", Help: "Bytes written through the mount.",
		Unit: Bytes, Kind: Counter, Metric: "written_bytes_total", Row: "read / written", Part: " / %s", Watch: Column{At: 2, Title: "wr"}})
	AutoCacheKept = define(Figure{Key: "auto_cache.kept", Help: "Opens under auto-cache, by whether they kept the kernel's cached pages of the file (unchanged since the kernel last saw it) or dropped them.",
		Unit: Count, Kind: Counter, Metric: "auto_cache_opens_total", Label: [2]string{"cache", "kept"}, Row: "auto-cache opens", Part: "%d kept"})
	AutoCacheDropped = define(Figure{Key: "auto_cache.dropped", Help: "Opens under auto-cache, by whether they kept the kernel's cached pages of the file (unchanged since the kernel last saw it) or dropped them.",
		Unit: Count, Kind: Counter, Metric: "auto_cache_opens_total", Label: [2]string{"cache", "dropped"}, Row: "auto-cache opens", Part: ", %d dropped"})
	MinorFaults = define(Figure{Key: "daemon_page_faults.minor", Help: "The daemon's own page faults (getrusage).",
		Unit: Count, Kind: Counter, Metric: "daemon_page_faults_total", Label: [2]string{"kind", "minor"}, Row: "daemon page faults", Part: "%d minor"})
	MajorFaults = define(Figure{Key: "daemon_page_faults.major", Help: "The daemon's own page faults (getrusage).",
		Unit: Count, Kind: Counter, Metric: "daemon_page_faults_total", Label: [2]string{"kind", "major"}, Row: "daemon page faults", Part: ", %d major"})
	HeapAlloc = define(Figure{Key: "heap_alloc_bytes", Help: "The daemon's Go heap in use.",
		Unit: Bytes, Kind: Gauge, Row: "daemon heap", Part: "%s in use"})
	HeapSys = define(Figure{Key: "heap_sys_bytes", Help: "The daemon's Go heap as obtained from the OS.",
		Unit: Bytes, Kind: Gauge, Row: "daemon heap", Part: ", %s from the OS"})

	// The dirty-page budget (the kernel's writeback of page cache pages):
	// the mount's backing device (bdi), the store's, and the system's
	// thresholds, from /sys/kernel/debug/bdi/DEV/stats (or, without
	// debugfs, the thresholds alone from /proc/vmstat); Snapshot.BDISources
	// says which device and which source each came from.
	MountBDIDirty     = bdiDirty("mount_bdi", "mount", "mount bdi", Column{At: 10, Title: "bdi dirty"})
	MountBDIWriteback = bdiWriteback("mount_bdi", "mount", "mount bdi")
	MountBDIThresh    = bdiThresh("mount_bdi", "mount", "mount bdi", Column{At: 11, Title: "bdi thresh"})
	MountBDIDirtied   = bdiDirtied("mount_bdi", "mount", "mount bdi")
	MountBDIWritten   = bdiWritten("mount_bdi", "mount", "mount bdi", Column{At: 12, Title: "bdi wr"})
	MountBDIBandwidth = bdiBandwidth("mount_bdi", "mount", "mount bdi")
	StoreBDIDirty     = bdiDirty("store_bdi", "store", "store bdi", Column{At: 13, Title: "store dirty"})
	StoreBDIWriteback = bdiWriteback("store_bdi", "store", "store bdi")
	StoreBDIThresh    = bdiThresh("store_bdi", "store", "store bdi", Column{})
	StoreBDIDirtied   = bdiDirtied("store_bdi", "store", "store bdi")
	StoreBDIWritten   = bdiWritten("store_bdi", "store", "store bdi", Column{At: 14, Title: "store wr"})
	StoreBDIBandwidth = bdiBandwidth("store_bdi", "store", "store bdi")
	BackgroundThresh  = define(Figure{Key: "dirty_thresholds.background_bytes", Help: "Dirty page cache of the system above which the flushers write back in the background.",
		Unit: Bytes, Kind: Gauge, Metric: "dirty_background_threshold_bytes", Row: "dirty thresholds", Part: "background %s"})
	DirtyThresh = define(Figure{Key: "dirty_thresholds.dirty_bytes", Help: "Dirty page cache of the system above which writers are throttled.",
		Unit: Bytes, Kind: Gauge, Metric: "dirty_threshold_bytes", Row: "dirty thresholds", Part: ", throttling %s"})
)

// The figures of one bdi: obj is their object in the stats file, label
// their Prometheus label's value (of "bdi"), row their row.

func bdiDirty(obj, label, row string, col Column) ID {
	return define(Figure{Key: obj + ".dirty_bytes", Help: "Dirty page cache pages of the backing device, not yet under writeback.",
		Unit: Bytes, Kind: Gauge, Metric: "bdi_dirty_bytes", Label: [2]string{"bdi", label}, Row: row, Part: "%s dirty", Watch: col})
}

func bdiWriteback(obj, label, row string) ID {
	return define(Figure{Key: obj + ".writeback_bytes", Help: "Page cache pages of the backing device under writeback.",
		Unit: Bytes, Kind: Gauge, Metric: "bdi_writeback_bytes", Label: [2]string{"bdi", label}, Row: row, Part: ", %s under writeback"})
}

func bdiThresh(obj, label, row string, col Column) ID {
	return define(Figure{Key: obj + ".dirty_threshold_bytes", Help: "The backing device's share of the dirty threshold: its writers are throttled above it.",
		Unit: Bytes, Kind: Gauge, Metric: "bdi_dirty_threshold_bytes", Label: [2]string{"bdi", label}, Row: row, Part: ", threshold %s", Watch: col})
}

func bdiDirtied(obj, label, row string) ID {
	return define(Figure{Key: obj + ".dirtied_bytes", Help: "Bytes of page cache of the backing device made dirty since it was set up.",
		Unit: Bytes, Kind: Counter, Metric: "bdi_dirtied_bytes_total", Label: [2]string{"bdi", label}, Row: row, Part: "; %s dirtied"})
}

func bdiWritten(obj, label, row string, col Column) ID {
	return define(Figure{Key: obj + ".written_bytes", Help: "Bytes of page cache of the backing device written back since it was set up.",
		Unit: Bytes, Kind: Counter, Metric: "bdi_written_bytes_total", Label: [2]string{"bdi", label}, Row: row, Part: ", %s written", Watch: col})
}

func bdiBandwidth(obj, label, row string) ID {
	return define(Figure{Key: obj + ".write_bandwidth_bytes_per_second", Help: "The kernel's estimate of the backing device's writeback bandwidth, in bytes per second.",
		Unit: Bytes, Kind: Gauge, Metric: "bdi_write_bandwidth_bytes_per_second", Label: [2]string{"bdi", label}, Row: row, Part: ", at %s/s"})
}
