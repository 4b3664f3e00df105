package fs

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsHandler: /metrics has the mount's collector and the Go and
// process collectors; / is a page linking to /metrics; nothing else is
// served.
func TestMetricsHandler(t *testing.T) {
	t.Parallel()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "mmapfs_test_gauge", Help: "A gauge of the test."})
	g.Set(7)
	var logs bytes.Buffer
	srv := httptest.NewServer(metricsHandler(g, "/mnt/<a&b>", log.New(&logs, "", 0)))
	defer srv.Close()
	get := func(path string) (int, string, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
	}
	code, _, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	for _, want := range []string{"mmapfs_test_gauge 7", "go_goroutines ", "go_memstats_heap_alloc_bytes ", "process_open_fds ", "process_resident_memory_bytes "} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	code, ctype, body := get("/")
	if code != http.StatusOK || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(body, `<a href="/metrics">`) {
		t.Errorf("/: %d %s\n%s\nwant an HTML page linking to /metrics", code, ctype, body)
	}
	if !strings.Contains(body, "/mnt/&lt;a&amp;b&gt;") {
		t.Errorf("/ does not name the mountpoint, escaped:\n%s", body)
	}
	if code, _, _ := get("/other"); code != http.StatusNotFound {
		t.Errorf("/other: %d, want 404", code)
	}
	if logs.Len() > 0 {
		t.Errorf("logged: %s", logs.String())
	}
}
