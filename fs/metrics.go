package fs

import (
	"html/template"
	"log"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mmapfs/mmapfs/backing/latency"
)

// Collector returns a Prometheus collector of the mount's figures: the
// same ones as the stats file, gathered at each scrape.
func (s *Server) Collector() prometheus.Collector {
	return &collector{m: s.m, mountpoint: s.mountpoint}
}

// MetricsHandler returns the HTTP handler of the mount's Prometheus
// endpoint: /metrics has the mount's figures (Collector) and the Go
// runtime's and the process's (go_*, process_*), as every Go exporter
// has; / is a page that links to /metrics.
func (s *Server) MetricsHandler() http.Handler {
	return metricsHandler(s.Collector(), s.mountpoint, s.m.log)
}

// metricsHandler serves c with the Go and process collectors at /metrics
// and an index page at /; errors serving them go to logger.
func metricsHandler(c prometheus.Collector, mountpoint string, logger *log.Logger) http.Handler {
	reg := prometheus.NewRegistry()
	// A fresh registry and collectors whose descriptors differ: Register
	// cannot fail.
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: logger}))
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := indexPage.Execute(w, mountpoint); err != nil {
			logger.Printf("metrics: serving / to %s: %v", r.RemoteAddr, err)
		}
	})
	return mux
}

// indexPage is the page at / of the metrics endpoint; its data is the
// mountpoint.
var indexPage = template.Must(template.New("index").Parse(`<!DOCTYPE html>
<html>
<head><title>mmapfs metrics: {{.}}</title></head>
<body>
<h1>mmapfs</h1>
<p>Prometheus metrics of the mmapfs mount at <code>{{.}}</code>: <a href="/metrics">/metrics</a>.</p>
</body>
</html>
`))

// collector gathers the mount's figures at each scrape.
type collector struct {
	m          *mountState // read only
	mountpoint string      // read only
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("mmapfs_"+name, help, labels, nil)
}

var (
	descInfo          = desc("info", "The mount's settings, as labels; always 1.", "mountpoint", "policy", "store", "keep_cache", "direct_io", "writeback_cache", "madvise", "populate", "unsafe_ignore_fsync")
	descUnsynced      = desc("unsynced_bytes", "Bytes the daemon wrote into mappings and has not msynced.")
	descOldest        = desc("oldest_unsynced_seconds", "Age of the oldest unsynced write.")
	descMsyncCalls    = desc("msync_calls_total", "msync(MS_SYNC) and fdatasync calls that synced data.")
	descMsyncBytes    = desc("msync_bytes_total", "Bytes those calls covered.")
	descMsyncDur      = desc("msync_duration_seconds", "Latency of those calls.")
	descAsyncCalls    = desc("async_writeback_calls_total", "Writebacks started without waiting (async policy).")
	descIgnored       = desc("ignored_fsyncs_total", "fsyncs answered without syncing (--unsafe-ignore-fsync).")
	descMappings      = desc("mappings", "Mappings live now.")
	descMapped        = desc("mapped_bytes", "Address space mapped now.")
	descResident      = desc("resident_bytes", "Bytes of the mapped files in memory now (mincore).")
	descOpenBlobs     = desc("open_blobs", "Blobs open now (by a handle, or kept for a periodic pass).")
	descResidentBlobs = desc("resident_blobs", "Blobs with a descriptor and a mapping now.")
	descEvictions     = desc("evictions_total", "Blobs unmapped and closed to stay within --max-resident.")
	descReopens       = desc("reopens_total", "Blobs reopened by handle after being dropped.")
	descRemaps        = desc("remaps_total", "mremaps done to grow a mapping.")
	descFaults        = desc("faults_total", "Faults on a mapping turned into errors or retries.")
	descRead          = desc("read_bytes_total", "Bytes read through the mount.")
	descWritten       = desc("written_bytes_total", "Bytes written through the mount.")
	descPageFaults    = desc("daemon_page_faults_total", "The daemon's own page faults (getrusage).", "kind")
	descRequests      = desc("fuse_requests_total", "FUSE requests served, by op.", "op")
	descRequestErrors = desc("fuse_request_errors_total", "FUSE requests answered with an error, by op.", "op")
	descRequestDur    = desc("fuse_request_duration_seconds", "Latency of FUSE requests, by op.", "op")
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.m.snapshot()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descInfo, err)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	sw := s.Switches
	b := strconv.FormatBool
	gauge(descInfo, 1, c.mountpoint, s.Policy, s.Store, b(sw.KeepCache), b(sw.DirectIO), b(sw.WritebackCache), sw.Madvise, b(sw.Populate), b(sw.UnsafeIgnoreFsync))
	gauge(descUnsynced, float64(s.UnsyncedBytes))
	gauge(descOldest, s.OldestUnsyncedSeconds)
	counter(descMsyncCalls, s.MsyncCalls)
	counter(descMsyncBytes, s.MsyncBytes)
	ch <- histogram(descMsyncDur, c.m.store.SyncLatency())
	counter(descAsyncCalls, s.AsyncWritebackCalls)
	counter(descIgnored, s.IgnoredFsyncs)
	gauge(descMappings, float64(s.Mappings))
	gauge(descMapped, float64(s.MappedBytes))
	gauge(descResident, float64(s.ResidentBytes))
	gauge(descOpenBlobs, float64(s.OpenBlobs))
	gauge(descResidentBlobs, float64(s.ResidentBlobs))
	counter(descEvictions, s.Evictions)
	counter(descReopens, s.Reopens)
	counter(descRemaps, s.Remaps)
	counter(descFaults, s.Faults)
	counter(descRead, s.BytesRead)
	counter(descWritten, s.BytesWritten)
	counter(descPageFaults, s.DaemonPageFaults.Minor, "minor")
	counter(descPageFaults, s.DaemonPageFaults.Major, "major")
	for i := range c.m.stats.ops {
		oc := &c.m.stats.ops[i]
		h := oc.hist.Snapshot()
		if h.Count == 0 {
			continue
		}
		counter(descRequests, h.Count, opNames[i])
		counter(descRequestErrors, oc.errors.Load(), opNames[i])
		ch <- histogram(descRequestDur, h, opNames[i])
	}
}

// histogram turns a latency snapshot into a Prometheus histogram with the
// snapshot's bucket edges.
func histogram(d *prometheus.Desc, s latency.Snapshot, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, latency.Buckets-1)
	var cum uint64
	for i := 0; i < latency.Buckets-1; i++ {
		cum += uint64(s.Counts[i])
		buckets[latency.UpperBound(i).Seconds()] = cum
	}
	return prometheus.MustNewConstHistogram(d, uint64(s.Count), s.Sum.Seconds(), buckets, labels...)
}
