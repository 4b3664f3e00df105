package tracereport

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
)

// Duration formats ns in human units: "850ns", "12µs", "3.4ms", "1.25s".
func Duration(ns int64) string {
	neg := ""
	if ns < 0 {
		neg, ns = "-", -ns
	}
	switch {
	case ns < 1000:
		return neg + strconv.FormatInt(ns, 10) + "ns"
	case ns < 1e6:
		return neg + trim(float64(ns)/1e3) + "µs"
	case ns < 1e9:
		return neg + trim(float64(ns)/1e6) + "ms"
	default:
		return neg + trim(float64(ns)/1e9) + "s"
	}
}

// Bytes formats a byte count in binary units: "512B", "4KiB", "1.5MiB".
func Bytes(n uint64) string {
	const k = 1024
	switch {
	case n < k:
		return strconv.FormatUint(n, 10) + "B"
	case n < k*k:
		return trim(float64(n)/k) + "KiB"
	case n < k*k*k:
		return trim(float64(n)/(k*k)) + "MiB"
	default:
		return trim(float64(n)/(k*k*k)) + "GiB"
	}
}

// trim prints f with up to three significant digits past the integer
// part's need, without trailing zeros: 12, 12.5, 1.25, 0.125.
func trim(f float64) string {
	var s string
	switch {
	case f >= 100:
		s = strconv.FormatFloat(f, 'f', 0, 64)
	case f >= 10:
		s = strconv.FormatFloat(f, 'f', 1, 64)
	default:
		s = strconv.FormatFloat(f, 'f', 2, 64)
	}
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// errnoName names a FUSE answer's error (negative errno, as the kernel's
// fuse_request_end gives it, or positive, as the daemon's record does):
// "ENOENT", or "errno 1234".
func errnoName(e int32) string {
	if e < 0 {
		e = -e
	}
	if e == 0 {
		return ""
	}
	if n, ok := errnoNames[syscall.Errno(e)]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", e)
}

// errnoNames are the errors a FUSE daemon or the kernel commonly answers.
var errnoNames = map[syscall.Errno]string{
	syscall.EPERM: "EPERM", syscall.ENOENT: "ENOENT", syscall.EINTR: "EINTR",
	syscall.EIO: "EIO", syscall.ENXIO: "ENXIO", syscall.E2BIG: "E2BIG",
	syscall.EBADF: "EBADF", syscall.EAGAIN: "EAGAIN", syscall.ENOMEM: "ENOMEM",
	syscall.EACCES: "EACCES", syscall.EFAULT: "EFAULT", syscall.EBUSY: "EBUSY",
	syscall.EEXIST: "EEXIST", syscall.EXDEV: "EXDEV", syscall.ENODEV: "ENODEV",
	syscall.ENOTDIR: "ENOTDIR", syscall.EISDIR: "EISDIR", syscall.EINVAL: "EINVAL",
	syscall.ENFILE: "ENFILE", syscall.EMFILE: "EMFILE", syscall.ETXTBSY: "ETXTBSY",
	syscall.EFBIG: "EFBIG", syscall.ENOSPC: "ENOSPC", syscall.ESPIPE: "ESPIPE",
	syscall.EROFS: "EROFS", syscall.EMLINK: "EMLINK", syscall.ERANGE: "ERANGE",
	syscall.ENAMETOOLONG: "ENAMETOOLONG", syscall.ENOSYS: "ENOSYS",
	syscall.ENOTEMPTY: "ENOTEMPTY", syscall.ELOOP: "ELOOP", syscall.ENODATA: "ENODATA",
	syscall.EOPNOTSUPP: "EOPNOTSUPP", syscall.ENOTTY: "ENOTTY", syscall.EDQUOT: "EDQUOT",
	syscall.ESTALE: "ESTALE", syscall.ECONNABORTED: "ECONNABORTED",
}
