package fs

import (
	"errors"
	"syscall"
	"testing"

	"github.com/mmapfs/mmapfs/backing"
)

// TestRequestError: a refused request's message is one sentence without
// an errno appended, and the errno and the cause are still in its chain.
func TestRequestError(t *testing.T) {
	t.Parallel()
	err := error(&requestError{"mounted without --powercut-sim", backing.ErrNoSim, syscall.EINVAL})
	if err.Error() != "mounted without --powercut-sim" {
		t.Errorf("message %q", err)
	}
	var e syscall.Errno
	if !errors.As(err, &e) || e != syscall.EINVAL || !errors.Is(err, backing.ErrNoSim) {
		t.Errorf("chain: errno %v, ErrNoSim %v", e, errors.Is(err, backing.ErrNoSim))
	}
}
