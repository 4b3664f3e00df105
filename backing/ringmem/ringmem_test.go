package ringmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"testing"
)

// TestRingNop: the raw ring on its own, a NOP goes round and its
// user_data comes back.
func TestRingNop(t *testing.T) {
	done := make(chan error)
	go func() {
		// The ring is single issuer: one thread for all of it.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		r, err := Setup(2, SetupSingleIssuer|SetupDeferTaskrun)
		if err != nil {
			done <- err
			return
		}
		for i := range 5 { // more than the ring holds: the indexes wrap
			sqe := r.NextSQE()
			if sqe == nil {
				done <- errors.Join(fmt.Errorf("round %d: no free SQE", i), r.Close())
				return
			}
			sqe[0] = OpNop
			binary.LittleEndian.PutUint64(sqe[32:], uint64(0x5a+i)) // user_data
			r.PushSQE()
			if p := r.PendingSQEs(); p != 1 {
				done <- errors.Join(fmt.Errorf("round %d: %d SQEs pending, want 1", i, p), r.Close())
				return
			}
			if _, err := r.Enter(1, 1, EnterGetEvents); err != nil {
				done <- errors.Join(err, r.Close())
				return
			}
			c, ok := r.PeekCQE()
			if !ok || c.UserData != uint64(0x5a+i) || c.Res != 0 {
				done <- errors.Join(fmt.Errorf("round %d: completion %+v, %v; want user data %#x, result 0", i, c, ok, 0x5a+i), r.Close())
				return
			}
			if c, ok := r.PeekCQE(); ok {
				done <- errors.Join(fmt.Errorf("round %d: a second completion %+v", i, c), r.Close())
				return
			}
		}
		done <- r.Close()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestMemAddr: Addr gives the address of the byte asked for, inside the
// mapping, and refuses one outside it.
func TestMemAddr(t *testing.T) {
	m, err := Map(8192)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Unmap(); err != nil {
			t.Error(err)
		}
	}()
	if len(m.Bytes()) != 8192 {
		t.Fatalf("len(Bytes()) = %d, want 8192", len(m.Bytes()))
	}
	if d := m.Addr(4096) - m.Addr(0); d != 4096 {
		t.Fatalf("Addr(4096)-Addr(0) = %d, want 4096", d)
	}
	if m.Addr(0)%4096 != 0 {
		t.Fatalf("Addr(0) = %#x, not page aligned: not an mmap", m.Addr(0))
	}
	defer func() {
		if recover() == nil {
			t.Error("Addr(8192) did not panic")
		}
	}()
	_ = m.Addr(8192)
}
