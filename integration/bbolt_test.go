package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestBbolt fills a bbolt database on the mount (bbolt reads through a
// read-only shared mapping of the file, from this test process, and writes
// with pwrite and fdatasync at each commit): a few thousand keys in three
// buckets over 25 transactions, with overwrites, deletes and values larger
// than a page. tx.Check must find nothing and every bucket must hold
// exactly what was written; again on a copy of the blob taken after a
// clean unmount, and again through the mount after the remount.
//
// Two sets of options: bbolt's defaults (nil), and explicit ones (NoSync
// and Mlock off, a 32 MiB initial mapping, far past the end of the file,
// and the hashmap freelist).
func TestBbolt(t *testing.T) {
	t.Parallel()
	forJudgeMounts(t, func(t *testing.T, m *mount) {
		variants := []struct {
			name string
			opts *bolt.Options
		}{
			{"default-options", nil},
			{"explicit-options", &bolt.Options{
				Timeout:         5 * time.Second,
				NoSync:          false,
				Mlock:           false,
				InitialMmapSize: 32 << 20,
				FreelistType:    bolt.FreelistMapType,
			}},
		}
		for _, v := range variants {
			t.Run(v.name, func(t *testing.T) { bboltJudge(t, m, v.name+".db", v.opts) })
		}
	})
}

var bboltBuckets = []string{"alpha", "beta", "gamma"}

// bboltModel is what each bucket must hold.
type bboltModel map[string]map[string][]byte

func bboltJudge(t *testing.T, m *mount, name string, opts *bolt.Options) {
	path := filepath.Join(m.mnt, name)
	model := bboltModel{}
	for _, b := range bboltBuckets {
		model[b] = map[string][]byte{}
	}
	rng := rand.New(rand.NewPCG(11, 12))

	db, err := bolt.Open(path, 0o644, opts)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	for txn := range 25 {
		err := db.Update(func(tx *bolt.Tx) error {
			for _, bn := range bboltBuckets {
				b, err := tx.CreateBucketIfNotExists([]byte(bn))
				if err != nil {
					return err
				}
				bm := model[bn]
				keys := make([]string, 0, len(bm))
				for k := range bm {
					keys = append(keys, k)
				}
				// Overwrite and delete some of the keys already there.
				for i := 0; i < 10 && len(keys) > 0; i++ {
					k := keys[rng.IntN(len(keys))]
					if _, ok := bm[k]; !ok {
						continue
					}
					if i%2 == 0 {
						v := judgePayload(rng)
						if err := b.Put([]byte(k), v); err != nil {
							return err
						}
						bm[k] = v
					} else {
						if err := b.Delete([]byte(k)); err != nil {
							return err
						}
						delete(bm, k)
					}
				}
				// 55 new keys.
				for range 55 {
					k := fmt.Sprintf("k%03d-%08x", txn, rng.Uint32())
					v := judgePayload(rng)
					if err := b.Put([]byte(k), v); err != nil {
						return err
					}
					bm[k] = v
				}
			}
			return nil
		})
		if err != nil {
			db.Close()
			t.Fatalf("transaction %d: %v", txn, err)
		}
	}
	bboltCheck(t, db, model, "through the mount, after the writes")
	if err := db.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if t.Failed() {
		return
	}

	copied := stopAndCopy(t, m, name)
	bboltReopenCheck(t, filepath.Join(copied, name), opts, model, "on a copy of the blob after a clean unmount")
	bboltReopenCheck(t, path, opts, model, "through the mount after a remount")
}

func bboltReopenCheck(t *testing.T, path string, opts *bolt.Options, model bboltModel, where string) {
	t.Helper()
	db, err := bolt.Open(path, 0o644, opts)
	if err != nil {
		t.Errorf("open %s (%s): %v", path, where, err)
		return
	}
	bboltCheck(t, db, model, where)
	if err := db.Close(); err != nil {
		t.Errorf("close %s (%s): %v", path, where, err)
	}
}

// bboltCheck runs tx.Check and compares every bucket with the model.
func bboltCheck(t *testing.T, db *bolt.DB, model bboltModel, where string) {
	t.Helper()
	err := db.View(func(tx *bolt.Tx) error {
		n := 0
		for err := range tx.Check() {
			if n < 10 {
				t.Errorf("bbolt tx.Check %s: %v", where, err)
			}
			n++
		}
		if n > 0 {
			t.Errorf("bbolt tx.Check %s: %d errors", where, n)
		}
		for _, bn := range bboltBuckets {
			b := tx.Bucket([]byte(bn))
			if b == nil {
				t.Errorf("bbolt %s: no bucket %s", where, bn)
				continue
			}
			want := model[bn]
			got, bad := 0, 0
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				got++
				wv, ok := want[string(k)]
				switch {
				case !ok:
					bad++
					if bad <= 5 {
						t.Errorf("bbolt %s: bucket %s has key %q, which was never written or was deleted", where, bn, k)
					}
				case !bytes.Equal(v, wv):
					bad++
					if bad <= 5 {
						t.Errorf("bbolt %s: bucket %s, key %q: %s", where, bn, k, diffBytes(v, wv))
					}
				}
			}
			if got != len(want) {
				t.Errorf("bbolt %s: bucket %s holds %d keys, want %d", where, bn, got, len(want))
			}
			if s := b.Stats(); s.KeyN != len(want) {
				t.Errorf("bbolt %s: bucket %s: Stats().KeyN = %d, want %d", where, bn, s.KeyN, len(want))
			}
		}
		return nil
	})
	if err != nil {
		t.Errorf("bbolt view %s: %v", where, err)
	}
}
