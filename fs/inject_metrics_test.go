package fs

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mmapfs/mmapfs/backing"
	"github.com/mmapfs/mmapfs/fs/inject"
)

// TestInjectMetricsAndStats: each rule's hits are in the snapshot (the
// stats file) and in the Prometheus endpoint as
// mmapfs_inject_hits_total{id, rule}; without rules neither has them.
func TestInjectMetricsAndStats(t *testing.T) {
	t.Parallel()
	m := testMountState(t, backing.Options{})
	m.inj = inject.NewSet(0, false)
	scrape := func() string {
		t.Helper()
		srv := httptest.NewServer(metricsHandler(&collector{m: m, mountpoint: "/mnt"}, "/mnt", log.New(io.Discard, "", 0)))
		defer srv.Close()
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(body)
	}
	if body := scrape(); strings.Contains(body, "mmapfs_inject_hits_total{") {
		t.Fatalf("hits without rules:\n%s", body)
	}
	for _, text := range []string{"op=fsync,errno=EIO", `op=write,path=a"b,torn=1`} {
		r, err := inject.Parse(text)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.inj.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	m.inj.Decide("fsync", "f", 0)
	m.inj.Decide("fsync", "g", 0)
	s, err := m.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Inject) != 2 || s.Inject[0].Hits != 2 || s.Inject[0].LastPath != "g" || s.Inject[1].Hits != 0 {
		t.Fatalf("snapshot inject: %+v", s.Inject)
	}
	body := scrape()
	for _, want := range []string{`mmapfs_inject_hits_total{id="1",rule="op=fsync,errno=EIO"} 2`, `mmapfs_inject_hits_total{id="2",rule="op=write,path=a\"b,torn=1"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
