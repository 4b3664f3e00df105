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
	"github.com/mmapfs/mmapfs/fs/wire"
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
	descMsyncDur      = desc("msync_duration_seconds", "Latency of those calls.")
	descRequests      = desc("fuse_requests_total", "FUSE requests served, by op.", "op")
	descRequestErrors = desc("fuse_request_errors_total", "FUSE requests answered with an error, by op.", "op")
	descRequestDur    = desc("fuse_request_duration_seconds", "Latency of FUSE requests, by op.", "op")
	descInjectHits    = desc("inject_hits_total", "Calls a fault-injection rule acted on (failed, delayed, tore, shortened), by rule: its id and text.", "id", "rule")
	// descFigures are the descriptors of the figures with a Metric, by
	// ID (nil for the others); figures that share a Metric share one.
	descFigures = figureDescs()
)

// figureDescs returns the descriptors of wire's figures, by ID.
func figureDescs() []*prometheus.Desc {
	descs := make([]*prometheus.Desc, len(wire.Figures()))
	byName := map[string]*prometheus.Desc{}
	for i, f := range wire.Figures() {
		if f.Metric == "" {
			continue
		}
		d, ok := byName[f.Metric]
		if !ok {
			var labels []string
			if f.Label[0] != "" {
				labels = []string{f.Label[0]}
			}
			d = desc(f.Metric, f.Help, labels...)
			byName[f.Metric] = d
		}
		descs[i] = d
	}
	return descs
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.m.snapshot()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descInfo, err)
		return
	}
	sw := s.Switches
	b := strconv.FormatBool
	ch <- prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1, c.mountpoint, s.Policy, s.Store, b(sw.KeepCache), b(sw.DirectIO), b(sw.WritebackCache), sw.Madvise, b(sw.Populate), b(sw.UnsafeIgnoreFsync))
	for i, f := range wire.Figures() {
		d := descFigures[i]
		if d == nil {
			continue
		}
		kind := prometheus.GaugeValue
		if f.Kind == wire.Counter {
			kind = prometheus.CounterValue
		}
		var labels []string
		if f.Label[0] != "" {
			labels = []string{f.Label[1]}
		}
		ch <- prometheus.MustNewConstMetric(d, kind, s.Figures.Float(wire.ID(i)), labels...)
	}
	ch <- histogram(descMsyncDur, c.m.store.SyncLatency())
	for i := range c.m.stats.ops {
		oc := &c.m.stats.ops[i]
		h := oc.hist.Snapshot()
		if h.Count == 0 {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(h.Count), opNames[i])
		ch <- prometheus.MustNewConstMetric(descRequestErrors, prometheus.CounterValue, float64(oc.errors.Load()), opNames[i])
		ch <- histogram(descRequestDur, h, opNames[i])
	}
	for _, r := range s.Inject {
		ch <- prometheus.MustNewConstMetric(descInjectHits, prometheus.CounterValue, float64(r.Hits), strconv.Itoa(r.ID), r.Rule)
	}
	collectTransport(ch, s.Transport)
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
