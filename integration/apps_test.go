package integration

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Databases that map their files, run on the mount by their own command
// line tools: SQLite (WAL, reads through a 256 MiB mmap, the wal-index in
// a shared mapping of the -shm file) and LMDB (reads through its map, and
// writes through it with MDB_WRITEMAP when python3-lmdb is there).

const appTimeout = 90 * time.Second // one run of a database tool

// judgePayload returns a value of random length: mostly small, sometimes
// larger than a page (overflow pages in both databases).
func judgePayload(rng *rand.Rand) []byte {
	n := 1 + rng.IntN(600)
	if rng.IntN(20) == 0 {
		n = 4096 + rng.IntN(12000)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// ---- SQLite ----

// TestSQLite runs 2000 transactions (inserts, updates, deletes, with
// payloads up to 16 KB) into a WAL database on the mount with
// mmap_size=256MiB, first 1200 from one sqlite3 process, then 400 each
// from two at once
// (their wal-index is a shared mapping of the -shm file on the mount, and
// their locks are the mount's). Then PRAGMA integrity_check must say ok and
// the table must hold exactly what the test wrote (count, sums and every
// row); again on a copy of the blob taken after a clean unmount, and again
// through the mount after the remount.
func TestSQLite(t *testing.T) {
	t.Parallel()
	sqlite := needTool(t, "sqlite3", "sqlite3")
	forJudgeMounts(t, func(t *testing.T, m *mount) { sqliteJudge(t, sqlite, m) })
}

type sqlRow struct {
	k int64
	v []byte
}

// sqlModel is what the table must hold; gen writes transactions into a
// script and applies them to the model.
type sqlModel struct {
	rows map[int64]sqlRow
}

// sqlWriter generates transactions on rows of its own (ids from base on).
type sqlWriter struct {
	m    *sqlModel
	rng  *rand.Rand
	next int64
	ids  []int64 // its live rows
}

func (w *sqlWriter) txns(b *strings.Builder, n int, begin string) {
	for range n {
		fmt.Fprintf(b, "%s;\n", begin)
		for range 2 {
			id, row := w.next, sqlRow{k: w.rng.Int64N(1 << 40), v: judgePayload(w.rng)}
			w.next++
			fmt.Fprintf(b, "INSERT INTO t(id, k, v) VALUES(%d, %d, X'%x');\n", id, row.k, row.v)
			w.m.rows[id] = row
			w.ids = append(w.ids, id)
		}
		// Update one of its rows.
		id := w.ids[w.rng.IntN(len(w.ids))]
		row := sqlRow{k: w.rng.Int64N(1 << 40), v: judgePayload(w.rng)}
		fmt.Fprintf(b, "UPDATE t SET k = %d, v = X'%x' WHERE id = %d;\n", row.k, row.v, id)
		w.m.rows[id] = row
		// And delete one, one time in three.
		if w.rng.IntN(3) == 0 {
			i := w.rng.IntN(len(w.ids))
			id := w.ids[i]
			w.ids[i] = w.ids[len(w.ids)-1]
			w.ids = w.ids[:len(w.ids)-1]
			fmt.Fprintf(b, "DELETE FROM t WHERE id = %d;\n", id)
			delete(w.m.rows, id)
		}
		b.WriteString("COMMIT;\n")
	}
}

// sqliteMmap is the mmap_size every connection sets: 256 MiB, more than
// the whole database, so that every read of a page goes through the map.
const sqliteMmap = "PRAGMA mmap_size=268435456;\n"

// sqliteQuiet runs the statements with their output discarded (PRAGMAs
// that set something print the new value).
func sqliteQuiet(stmts string) string {
	return ".output /dev/null\n" + stmts + ".output stdout\n"
}

func sqliteJudge(t *testing.T, sqlite string, m *mount) {
	dir := filepath.Join(m.mnt, "sqlite")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "test.db")
	model := &sqlModel{rows: map[int64]sqlRow{}}
	run := func(what, script string) {
		t.Helper()
		r := runTool(t, appTimeout, dir, strings.NewReader(script), sqlite, "-bail", db)
		if !r.ok() || r.stderr != "" {
			t.Fatalf("sqlite3 (%s) failed:\n%s", what, r)
		}
	}

	// One writer: 1200 transactions.
	var b strings.Builder
	b.WriteString(sqliteQuiet("PRAGMA journal_mode=WAL;\n" + sqliteMmap + "PRAGMA synchronous=NORMAL;\n"))
	b.WriteString("CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER NOT NULL, v BLOB NOT NULL);\n")
	b.WriteString("CREATE INDEX t_k ON t(k);\n")
	w := &sqlWriter{m: model, rng: rand.New(rand.NewPCG(1, 2)), next: 1}
	w.txns(&b, 1200, "BEGIN")
	run("one writer", b.String())

	// Two writers at once, each on rows of its own, syncing every commit.
	var wg sync.WaitGroup
	results := make([]toolRun, 2)
	scripts := make([]string, 2)
	for i := range scripts {
		var b strings.Builder
		b.WriteString(sqliteQuiet(sqliteMmap + "PRAGMA busy_timeout=60000;\nPRAGMA synchronous=FULL;\n"))
		w := &sqlWriter{m: model, rng: rand.New(rand.NewPCG(3, uint64(i))), next: int64(i+1) * 1_000_000}
		w.txns(&b, 400, "BEGIN IMMEDIATE")
		scripts[i] = b.String()
	}
	for i := range scripts {
		wg.Go(func() {
			results[i] = runTool(t, appTimeout, dir, strings.NewReader(scripts[i]), sqlite, "-bail", db)
		})
	}
	wg.Wait()
	for i, r := range results {
		if !r.ok() || r.stderr != "" {
			t.Fatalf("sqlite3 (concurrent writer %d) failed:\n%s", i, r)
		}
	}

	sqliteCheck(t, sqlite, db, model, "through the mount")
	if t.Failed() {
		return
	}
	copied := stopAndCopy(t, m, "sqlite/test.db*")
	sqliteCheck(t, sqlite, filepath.Join(copied, "test.db"), model, "on a copy of the blob after a clean unmount")
	sqliteCheck(t, sqlite, db, model, "through the mount after a remount")
}

// sqliteCheck checks the database at db: integrity, WAL mode, and that the
// table holds exactly the model's rows.
func sqliteCheck(t *testing.T, sqlite, db string, model *sqlModel, where string) {
	t.Helper()
	script := sqliteQuiet(sqliteMmap) + `PRAGMA integrity_check;
PRAGMA journal_mode;
SELECT 'total', count(*), sum(k), sum(length(v)) FROM t;
SELECT id, k, hex(v) FROM t ORDER BY id;
`
	r := runTool(t, appTimeout, filepath.Dir(db), strings.NewReader(script), sqlite, "-bail", db)
	if !r.ok() || r.stderr != "" {
		t.Errorf("sqlite3 check %s failed:\n%s", where, tailText(r.String(), 8000))
		return
	}
	ids := make([]int64, 0, len(model.rows))
	var sumK, sumLen int64
	for id, row := range model.rows {
		ids = append(ids, id)
		sumK += row.k
		sumLen += int64(len(row.v))
	}
	slices.Sort(ids)
	var want strings.Builder
	fmt.Fprintf(&want, "ok\nwal\ntotal|%d|%d|%d\n", len(ids), sumK, sumLen)
	for _, id := range ids {
		row := model.rows[id]
		fmt.Fprintf(&want, "%d|%d|%X\n", id, row.k, row.v)
	}
	if r.stdout != want.String() {
		t.Errorf("sqlite3 %s: %s\n(the command was: %s)", where, judgeLineDiff(r.stdout, want.String()), r.cmdline)
	}
}

// judgeLineDiff describes the first line where got and want differ.
func judgeLineDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("%d lines, want %d; line %d is\n  %s\nwant\n  %s", len(g), len(w), i+1, clipText(gl, 200), clipText(wl, 200))
		}
	}
	return "equal"
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("... (%d bytes)", len(s))
}

// ---- LMDB ----

// TestLMDB loads a few thousand records into an LMDB environment on the
// mount with mdb_load (five loads, each a transaction of its own process;
// the last overwrites records), then, with python3-lmdb, changes it with
// MDB_WRITEMAP (puts, overwrites and deletes written through the map,
// msync at each commit). mdb_dump must give back exactly the records and
// mdb_stat must count them; again on a copy of the blob taken after a
// clean unmount, and again through the mount after the remount.
//
// The lmdb-utils tools have no switch for MDB_WRITEMAP: without
// python3-lmdb only the write()-plus-read-only-map path is judged (the
// test logs that).
func TestLMDB(t *testing.T) {
	t.Parallel()
	tools := map[string]string{}
	for _, name := range []string{"mdb_load", "mdb_dump", "mdb_stat"} {
		tools[name] = needTool(t, name, "lmdb-utils")
	}
	forJudgeMounts(t, func(t *testing.T, m *mount) { lmdbJudge(t, tools, m) })
}

// lmdbMapSize is the map size of the environments: LMDB with WRITEMAP
// makes the file that big.
const lmdbMapSize = 32 << 20

// lmdbRecords generates n new records (keys not in model) and overwrites
// of existing ones; it applies them to model.
func lmdbRecords(rng *rand.Rand, model map[string][]byte, n, overwrite int) [][2][]byte {
	var recs [][2][]byte
	for range n {
		var k string
		for {
			k = fmt.Sprintf("key-%08d", rng.IntN(100_000_000))
			if _, dup := model[k]; !dup {
				break
			}
		}
		v := judgePayload(rng)
		model[k] = v
		recs = append(recs, [2][]byte{[]byte(k), v})
	}
	keys := lmdbKeys(model)
	for range overwrite {
		k := keys[rng.IntN(len(keys))]
		v := judgePayload(rng)
		model[k] = v
		recs = append(recs, [2][]byte{[]byte(k), v})
	}
	return recs
}

func lmdbKeys(model map[string][]byte) []string {
	keys := make([]string, 0, len(model))
	for k := range model {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// lmdbDumpFormat renders records in mdb_dump's bytevalue format, the input
// of mdb_load.
func lmdbDumpFormat(recs [][2][]byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "VERSION=3\nformat=bytevalue\ntype=btree\nmapsize=%d\nHEADER=END\n", lmdbMapSize)
	for _, r := range recs {
		fmt.Fprintf(&b, " %x\n %x\n", r[0], r[1])
	}
	b.WriteString("DATA=END\n")
	return b.String()
}

// lmdbWritemapScript applies the operations on its standard input to the
// environment with MDB_WRITEMAP: "B" begins a write transaction, "P key
// value" puts, "D key" deletes (the key must exist), "C" commits; keys and
// values in hex.
const lmdbWritemapScript = `
import sys, lmdb
env = lmdb.open(sys.argv[1], map_size=int(sys.argv[2]), writemap=True, sync=True, metasync=True)
if not env.flags()["writemap"]:
    sys.exit("the environment is not open with MDB_WRITEMAP")
txn = None
for line in sys.stdin:
    f = line.split()
    if f[0] == "B":
        txn = env.begin(write=True)
    elif f[0] == "P":
        txn.put(bytes.fromhex(f[1]), bytes.fromhex(f[2]))
    elif f[0] == "D":
        if not txn.delete(bytes.fromhex(f[1])):
            sys.exit("delete: no key " + f[1])
    elif f[0] == "C":
        txn.commit()
        txn = None
print("entries", env.stat()["entries"])
env.close()
`

func lmdbJudge(t *testing.T, tools map[string]string, m *mount) {
	env := filepath.Join(m.mnt, "lmdb")
	if err := os.Mkdir(env, 0o755); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 8))
	model := map[string][]byte{}

	// Five loads: 4 × 1000 new records, then 500 overwrites.
	for i := range 5 {
		n, over := 1000, 0
		if i == 4 {
			n, over = 0, 500
		}
		in := filepath.Join(work, fmt.Sprintf("load%d.txt", i))
		if err := os.WriteFile(in, []byte(lmdbDumpFormat(lmdbRecords(rng, model, n, over))), 0o644); err != nil {
			t.Fatal(err)
		}
		r := runTool(t, appTimeout, work, nil, tools["mdb_load"], "-f", in, env)
		if !r.ok() || r.stderr != "" {
			t.Fatalf("mdb_load (load %d) failed:\n%s", i, r)
		}
	}
	lmdbCheck(t, tools, env, model, "after mdb_load")

	// Writes through the map.
	if py, why := pythonWithLMDB(t, work); py == "" {
		t.Logf("MDB_WRITEMAP not judged: %s", why)
	} else {
		var ops strings.Builder
		for range 10 {
			ops.WriteString("B\n")
			keys := lmdbKeys(model)
			for range 30 {
				k := keys[rng.IntN(len(keys))]
				if _, ok := model[k]; !ok {
					continue // deleted in this transaction
				}
				fmt.Fprintf(&ops, "D %x\n", k)
				delete(model, k)
			}
			for _, r := range lmdbRecords(rng, model, 50, 30) {
				fmt.Fprintf(&ops, "P %x %x\n", r[0], r[1])
			}
			ops.WriteString("C\n")
		}
		r := runTool(t, appTimeout, work, strings.NewReader(ops.String()), py, "-c", lmdbWritemapScript, env, fmt.Sprint(lmdbMapSize))
		if !r.ok() || r.stderr != "" {
			t.Fatalf("python3-lmdb with MDB_WRITEMAP failed:\n%s", r)
		}
		if want := fmt.Sprintf("entries %d\n", len(model)); r.stdout != want {
			t.Errorf("python3-lmdb with MDB_WRITEMAP printed %q, want %q", r.stdout, want)
		}
		lmdbCheck(t, tools, env, model, "after the writes through the map (MDB_WRITEMAP)")
	}
	if t.Failed() {
		return
	}

	copied := stopAndCopy(t, m, "lmdb/data.mdb")
	lmdbCheck(t, tools, copied, model, "on a copy of the blob after a clean unmount")
	lmdbCheck(t, tools, env, model, "through the mount after a remount")
}

// pythonWithLMDB returns a python3 that can import lmdb: Debian's first
// (python3-lmdb is built for it; a python3 earlier on the PATH, such as a
// pyenv one, may not have it), else the one on the PATH. Or "" and why.
func pythonWithLMDB(t *testing.T, dir string) (string, string) {
	var cands []string
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		cands = append(cands, "/usr/bin/python3")
	}
	if p, err := exec.LookPath("python3"); err == nil && p != "/usr/bin/python3" {
		cands = append(cands, p)
	}
	if len(cands) == 0 {
		return "", "no python3 (install the Debian package python3-lmdb)"
	}
	var why []string
	for _, py := range cands {
		r := runTool(t, appTimeout, dir, nil, py, "-c", "import lmdb")
		if r.ok() {
			return py, ""
		}
		why = append(why, fmt.Sprintf("%s cannot import lmdb", py))
	}
	return "", strings.Join(why, "; ") + " (install the Debian package python3-lmdb)"
}

// lmdbCheck requires that mdb_dump gives back exactly model and that
// mdb_stat counts its records.
func lmdbCheck(t *testing.T, tools map[string]string, env string, model map[string][]byte, where string) {
	t.Helper()
	r := runTool(t, appTimeout, env, nil, tools["mdb_dump"], env)
	if !r.ok() || r.stderr != "" {
		t.Errorf("mdb_dump %s failed:\n%s", where, tailText(r.String(), 8000))
		return
	}
	var want strings.Builder
	for _, k := range lmdbKeys(model) {
		fmt.Fprintf(&want, " %x\n %x\n", k, model[k])
	}
	_, data, ok1 := strings.Cut(r.stdout, "HEADER=END\n")
	data, _, ok2 := strings.Cut(data, "DATA=END\n")
	if !ok1 || !ok2 {
		t.Errorf("mdb_dump %s: no HEADER=END ... DATA=END in its output:\n%s", where, tailText(r.stdout, 2000))
	} else if data != want.String() {
		t.Errorf("mdb_dump %s: %s", where, judgeLineDiff(data, want.String()))
		lmdbDiffKeys(t, data, model)
	}

	r = runTool(t, appTimeout, env, nil, tools["mdb_stat"], "-ef", env)
	if !r.ok() || r.stderr != "" {
		t.Errorf("mdb_stat %s failed:\n%s", where, r)
		return
	}
	if want := fmt.Sprintf("  Entries: %d\n", len(model)); !strings.Contains(r.stdout, want) {
		t.Errorf("mdb_stat %s: no %q in its output:\n%s", where, strings.TrimSpace(want), r.stdout)
	}
}

// lmdbDiffKeys logs which keys a dump lacks, has in excess or has with
// another value (the first few of each).
func lmdbDiffKeys(t *testing.T, data string, model map[string][]byte) {
	lines := strings.Split(strings.TrimSuffix(data, "\n"), "\n")
	got := map[string][]byte{}
	for i := 0; i+1 < len(lines); i += 2 {
		k, err1 := hex.DecodeString(strings.TrimSpace(lines[i]))
		v, err2 := hex.DecodeString(strings.TrimSpace(lines[i+1]))
		if err1 != nil || err2 != nil {
			t.Logf("cannot decode the dump at line %d", i+1)
			return
		}
		got[string(k)] = v
	}
	var missing, extra, changed []string
	for k, v := range model {
		gv, ok := got[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case !bytes.Equal(gv, v):
			changed = append(changed, fmt.Sprintf("%s (%s)", k, diffBytes(gv, v)))
		}
	}
	for k := range got {
		if _, ok := model[k]; !ok {
			extra = append(extra, k)
		}
	}
	for _, l := range [][]string{missing, extra, changed} {
		slices.Sort(l)
	}
	t.Logf("%d records missing %v, %d in excess %v, %d with another value %v",
		len(missing), missing[:min(5, len(missing))], len(extra), extra[:min(5, len(extra))], len(changed), changed[:min(5, len(changed))])
}
