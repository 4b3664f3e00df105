// Package integration holds the end-to-end tests of mmapfs: they build the
// mmapfs binary, mount it for real and talk to the mount with ordinary
// system calls and client memory mappings.
//
// # Running
//
//	cd /work/main && go test -race -count=1 ./integration/
//
// The tests need root (they mount with FUSE), /dev/fuse and fusermount3.
// Without root or /dev/fuse the whole package is skipped with a message.
// When the tests run with -race, the daemon is built with -race too, so a
// data race in the daemon fails the test that provoked it (the daemon then
// exits non-zero).
//
// # The harness
//
// The harness is harness_test.go; TestMain (main_test.go) builds
// cmd/mmapfs once into a temporary directory. startMount
// runs it as a subprocess on a fresh store and mountpoint (both from
// t.TempDir), waits until the daemon logs that it is serving (the mount is
// then fully usable; showing in /proc/self/mountinfo comes earlier) and
// registers a cleanup that stops the daemon with SIGTERM, requires a clean
// exit 0 and, whatever happened (t.Fatal, panic, a hung or killed daemon),
// unmounts lazily and kills the daemon so that no mount is left behind.
//
// Helpers: startMount/startMountAt, mount.stop (SIGTERM, clean exit
// required), mount.remount (stop and start on the same store), mount.kill
// (SIGKILL; the dead mount stays until unmounted), mount.pid, and
// runBinary for command lines that should fail.
//
// Two safety nets back the cleanups. Daemons are started through this
// test binary acting as a trampoline that marks every inherited descriptor
// close-on-exec, so that a file some test opened on a mount without
// O_CLOEXEC cannot leak into a daemon and keep that mount busy. And a
// watchdog process (this test binary again) that outlives the test run
// detaches any mount still registered when the run dies without cleaning
// up (a panic in another test, a -timeout, a kill).
//
// The daemon always runs in its own process: the tests mmap files of the
// mount, and a process that serves a FUSE mount and page-faults on it can
// deadlock.
//
// # Helper processes
//
// A test that needs a process of its own runs this test binary again in a
// role: the trampoline and the watchdog above, the fsx clients, the
// many-files clients, the modes client (which runs as another user, with
// a umask of its own). The roles are one table in main_test.go (roles);
// roleCommand builds the command for one, and TestMain plays it before
// anything else and exits. The one program of its own is the crash
// writer, crashwriter/, built once per run without -race.
//
// # Packages beside the tests
//
// What the tests check with, as ordinary packages that can be read and
// reused without the harness:
//
//   - fsx: the randomized model checker of files in a directory (TestFsx
//     runs it on mounts; it runs on any directory).
//   - crashmodel: what a directory may hold after a crash or a power cut,
//     from the crash writer's log (TestCrashKill, TestPowerCut).
//   - crashwriter: the crash tests' client workload, a command, and
//     crashwriter/crashdata, the bytes it writes.
//   - mapfault: catching the memory fault of an access to a mapping.
//   - mmapcheck: the mmap guarantees of `mmapfs check DIR`, one function
//     each, for any directory (TestCheck runs them on filesystems good and
//     broken; the TestMmap tests run some of them on mounts).
//   - brokenfs: two FUSE filesystems that break mmap on purpose (direct
//     I/O without shared mappings; stale pages), for TestCheck to catch.
//
// # The transport
//
// MMAPFS_INTEGRATION_TRANSPORT=dev|uring|auto runs every mount of the
// suite with that --transport (a test's own --transport wins). With
// uring TestMain turns the fuse module's enable_uring on for the run if
// it is off, and puts back what it was when the run ends; it shares that
// with the tests that need the rings themselves (withURing) and with
// every other process that does (fs/uring's tests, another run, the
// bench) through internal/enableuring: the first user turns it on, the
// last of any process puts it back, nothing turns it off while one
// runs, and the watchdog puts it back if this binary dies as the last
// user. Without root, or in a kernel without FUSE over
// io_uring (no /sys/module/fuse/parameters/enable_uring), the run is
// skipped, with the reason, instead of every test failing. The tests of
// uring_test.go and uringkill_test.go mount over the rings in every run
// whatever the variable says.
//
//	MMAPFS_INTEGRATION_TRANSPORT=uring go test -count=1 ./integration/
//
// # Checking the suite itself
//
// With MMAPFS_INTEGRATION_FS=loopback the suite runs against go-fuse's
// example loopback filesystem instead of mmapfs (tests that only make sense
// for mmapfs, such as the CLI errors or the daemon's memory maps, are
// skipped). The loopback is a known-good reference: a test that fails there
// is a bug in the test, not in mmapfs.
//
//	MMAPFS_INTEGRATION_FS=loopback go test -count=1 ./integration/
package integration
