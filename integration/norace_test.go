//go:build !race

package integration

// raceEnabled reports whether the tests run with -race; the daemon is then
// built with -race as well.
const raceEnabled = false
