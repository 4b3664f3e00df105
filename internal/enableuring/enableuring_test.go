package enableuring

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mmapfs/mmapfs/internal/testproc"
)

// helperEnv makes the test binary a user of the switch at its value
// (a path): it acquires it, says "held", and releases it when its stdin
// ends or reads a line, then says "released".
const helperEnv = "ENABLEURING_TEST_HELPER"

func TestMain(m *testing.M) {
	if p, ok := os.LookupEnv(helperEnv); ok {
		os.Exit(helper(p))
	}
	os.Exit(m.Run())
}

func helper(param string) int {
	u, err := For(param).Acquire()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("held")
	bufio.NewReader(os.Stdin).ReadString('\n')
	if err := u.Release(); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("released")
	return 0
}

// user is another process using the switch.
type user struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
	out   *bufio.Reader
}

// startUser starts a helper process on param and waits until it holds
// the switch.
func startUser(t *testing.T, param string) *user {
	t.Helper()
	u := spawnUser(t, param)
	u.expect(t, "held")
	return u
}

// spawnUser starts a helper process on param.
func spawnUser(t *testing.T, param string) *user {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+param)
	in, out := testproc.Start(t, cmd)
	return &user{cmd: cmd, stdin: in, out: bufio.NewReader(out)}
}

// expect reads the user's next line, which must be want (in 10s).
func (u *user) expect(t *testing.T, want string) {
	t.Helper()
	got := make(chan string, 1)
	go func() { l, _ := u.out.ReadString('\n'); got <- strings.TrimSpace(l) }()
	select {
	case l := <-got:
		if l != want {
			t.Fatalf("the other user said %q, want %q", l, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the other user did not say %q in 10s", want)
	}
}

// release makes the user release the switch and exit.
func (u *user) release(t *testing.T) {
	t.Helper()
	u.stdin.Close()
	u.expect(t, "released")
	if err := u.cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

// kill kills the user, which releases nothing.
func (u *user) kill(t *testing.T) {
	t.Helper()
	if err := u.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	u.cmd.Wait()
}

// fakeParam makes a switch file reading v.
func fakeParam(t *testing.T, v string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "enable_uring")
	if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantParam checks the switch reads v.
func wantParam(t *testing.T, p, v, when string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != v {
		t.Fatalf("%s: the switch reads %q, want %q", when, got, v)
	}
}

func acquire(t *testing.T, s Switch) *Use {
	t.Helper()
	u, err := s.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func release(t *testing.T, u *Use) {
	t.Helper()
	if err := u.Release(); err != nil {
		t.Fatal(err)
	}
}

// TestOneUser: an off switch is on while used and off after; an on one
// is never written; uses of one process nest.
func TestOneUser(t *testing.T) {
	p := fakeParam(t, "N")
	s := For(p)
	a := acquire(t, s)
	if !a.Changed {
		t.Error("the first use of an off switch did not say it turned it on")
	}
	wantParam(t, p, "1", "used")
	b := acquire(t, s)
	if b.Changed {
		t.Error("the second use says it turned the switch on")
	}
	release(t, a)
	wantParam(t, p, "1", "one of two uses released")
	release(t, b)
	wantParam(t, p, "N", "both released")
	release(t, b) // twice is harmless
	wantParam(t, p, "N", "released twice")
	if _, err := os.Stat(s.recordPath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the record is left: %v", err)
	}

	on := fakeParam(t, "Y")
	fi, _ := os.Stat(on)
	u := acquire(t, For(on))
	release(t, u)
	wantParam(t, on, "Y", "an on switch, used and released")
	if fi2, _ := os.Stat(on); !fi2.ModTime().Equal(fi.ModTime()) {
		t.Error("an on switch was written")
	}
}

// TestNoSwitch: a kernel without the switch says so.
func TestNoSwitch(t *testing.T) {
	_, err := For(filepath.Join(t.TempDir(), "enable_uring")).Acquire()
	if !errors.Is(err, ErrNoURing) {
		t.Fatalf("Acquire of a missing switch: %v, want ErrNoURing", err)
	}
}

// TestTwoProcesses: whichever process leaves last puts the switch back,
// whichever turned it on; the first to leave never turns it off under
// the other.
func TestTwoProcesses(t *testing.T) {
	for _, otherFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("other first %v", otherFirst), func(t *testing.T) {
			p := fakeParam(t, "N")
			s := For(p)
			var other *user
			var mine *Use
			if otherFirst {
				other = startUser(t, p)
				mine = acquire(t, s)
				if mine.Changed {
					t.Error("the second user says it turned the switch on")
				}
			} else {
				mine = acquire(t, s)
				other = startUser(t, p)
			}
			wantParam(t, p, "1", "two users")
			// The one that turned it on leaves first, then the other.
			if otherFirst {
				other.release(t)
				wantParam(t, p, "1", "the other left, this one uses it")
				release(t, mine)
			} else {
				release(t, mine)
				wantParam(t, p, "1", "this one left, the other uses it")
				other.release(t)
			}
			wantParam(t, p, "N", "both left")
		})
	}
}

// TestKilledUser: a user killed while it holds the switch never blocks
// the others; the next to leave, or Recover, puts back what it found.
func TestKilledUser(t *testing.T) {
	t.Run("alone", func(t *testing.T) {
		p := fakeParam(t, "N")
		startUser(t, p).kill(t)
		wantParam(t, p, "1", "the user was killed")
		if err := For(p).Recover(); err != nil {
			t.Fatal(err)
		}
		wantParam(t, p, "N", "recovered")
		if err := For(p).Recover(); err != nil { // nothing left to do
			t.Fatal(err)
		}
		wantParam(t, p, "N", "recovered twice")
	})
	t.Run("with another", func(t *testing.T) {
		p := fakeParam(t, "N")
		s := For(p)
		killed := startUser(t, p)
		mine := acquire(t, s)
		killed.kill(t)
		if err := s.Recover(); err != nil {
			t.Fatal(err)
		}
		wantParam(t, p, "1", "Recover while another uses it")
		release(t, mine)
		wantParam(t, p, "N", "the last user left")
	})
	t.Run("then a new user", func(t *testing.T) {
		p := fakeParam(t, "N")
		s := For(p)
		startUser(t, p).kill(t)
		u := acquire(t, s)
		wantParam(t, p, "1", "a new user after the kill")
		release(t, u)
		wantParam(t, p, "N", "the new user left")
	})
}

// TestIfOff: f runs only while the switch is off and unused.
func TestIfOff(t *testing.T) {
	p := fakeParam(t, "N")
	s := For(p)
	ran, err := s.IfOff(func() { wantParam(t, p, "N", "in IfOff") })
	if err != nil || !ran {
		t.Fatalf("IfOff on an off switch: ran %v, %v", ran, err)
	}
	u := acquire(t, s)
	ran, err = s.IfOff(func() {})
	if err != nil || ran {
		t.Fatalf("IfOff on a used switch: ran %v, %v", ran, err)
	}
	release(t, u)
	// A user of another process that waits for IfOff's lock.
	var other *user
	ran, err = s.IfOff(func() {
		other = spawnUser(t, p)
		time.Sleep(200 * time.Millisecond)
		wantParam(t, p, "N", "another process acquires during IfOff")
	})
	if err != nil || !ran {
		t.Fatalf("IfOff: ran %v, %v", ran, err)
	}
	other.expect(t, "held")
	wantParam(t, p, "1", "after IfOff")
	other.release(t)
	wantParam(t, p, "N", "the other left")
}
