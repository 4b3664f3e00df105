package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/fs/wire"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/ from what the code prints now")

// golden compares got with the file testdata/name (or, with -update,
// rewrites the file).
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := "testdata/" + name
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestStatsGolden: a stats file with every key set is decoded and encoded
// again unchanged (every key, in its place), and prints exactly the table
// and --watch line of testdata: what scripts and readers see stays as it
// is whatever the figures' code looks like.
func TestStatsGolden(t *testing.T) {
	t.Parallel()
	s, raw, err := readStats("testdata/stats.json")
	if err != nil {
		t.Fatal(err)
	}
	again, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if again = append(again, '\n'); !bytes.Equal(again, raw) {
		t.Errorf("stats.json decoded and encoded again differs:\n--- got\n%s\n--- want\n%s", again, raw)
	}
	var table bytes.Buffer
	if err := printStats(&table, s); err != nil {
		t.Fatal(err)
	}
	golden(t, "stats.table", table.Bytes())

	later, _, err := readStats("testdata/stats-later.json")
	if err != nil {
		t.Fatal(err)
	}
	table.Reset()
	if err := printStats(&table, later); err != nil {
		t.Fatal(err)
	}
	golden(t, "stats-later.table", table.Bytes())
	golden(t, "stats.watch", []byte(watchHeader+"\n"+watchLine(s, later, 2*time.Second)+"\n"))
}

// TestEveryFigureShows: each figure of wire's list with a Row is in the
// table (a quiet one once it is not 0) and each with a --watch column is
// in the header: a new figure needs no code here to show.
func TestEveryFigureShows(t *testing.T) {
	t.Parallel()
	var s wire.Snapshot
	for i, f := range wire.Figures() {
		s.Figures.Set(wire.ID(i), 1)
		if f.Watch.At > 0 && !strings.Contains(watchHeader, "  "+f.Watch.Title) {
			t.Errorf("%s: --watch header %q lacks its column %q", f.Key, watchHeader, f.Watch.Title)
		}
	}
	var table bytes.Buffer
	if err := printStats(&table, &s); err != nil {
		t.Fatal(err)
	}
	for _, f := range wire.Figures() {
		if f.Row != "" && !strings.Contains(table.String(), "\n"+f.Row+"  ") {
			t.Errorf("%s: the table lacks its row %q:\n%s", f.Key, f.Row, table.String())
		}
	}
	if n := len(strings.Fields(watchLine(&s, &s, time.Second))); n != len(watchColumns)+1 {
		t.Errorf("a --watch line has %d values, want %d", n, len(watchColumns)+1)
	}
}
