// Package crashdata derives the bytes the crash writer writes, so that the
// writer process and the tests that check its work agree by construction.
// It must stay deterministic: a change is a change of both sides at once.
package crashdata

// Data returns the n bytes written by call seq of a run with seed.
func Data(seed uint64, seq int, n int) []byte {
	b := make([]byte, n)
	x := (seed^uint64(seq)*0x9E3779B97F4A7C15)*0xBF58476D1CE4E5B9 + 0x94D049BB133111EB
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x >> 24)
	}
	return b
}
