package integration

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// traceClient plays roleTraceClient: the program that mmapfs trace runs
// in the trace tests, one action on one file of the mount:
//
//	read FILE            read it to its end in 4 KiB reads
//	mapread FILE         map it (MAP_SHARED, read only) and load a byte of each page, in order
//	mapwrite FILE SIZE   make it SIZE bytes, map it shared, store into every page, msync(MS_SYNC)
//	write FILE SIZE      write SIZE bytes to it in 1 MiB writes, then close it (no fsync)
//
// It prints "bytes N seconds S" and exits 0, or prints the error and exits 1.
func traceClient(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "trace client: want ACTION FILE [SIZE]")
		return 2
	}
	size := int64(0)
	if len(args) > 2 {
		n, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "trace client:", err)
			return 2
		}
		size = n
	}
	start := time.Now()
	n, err := traceClientAct(args[0], args[1], size)
	if err != nil {
		fmt.Fprintf(os.Stderr, "trace client: %s %s: %v\n", args[0], args[1], err)
		return 1
	}
	fmt.Printf("bytes %d seconds %.6f\n", n, time.Since(start).Seconds())
	return 0
}

func traceClientAct(action, path string, size int64) (int64, error) {
	switch action {
	case "read":
		f, err := os.Open(path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		// 4 KiB reads, so that readahead's windows grow from their
		// smallest (a window starts at a few times the read's size).
		buf := make([]byte, 4096)
		var n int64
		for {
			r, err := f.Read(buf)
			n += int64(r)
			if err == io.EOF {
				return n, nil
			}
			if err != nil {
				return n, err
			}
		}
	case "mapread":
		f, err := os.Open(path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return 0, err
		}
		data, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return 0, fmt.Errorf("mmap: %w", err)
		}
		defer unix.Munmap(data)
		// The loads' sum is printed, so that the compiler keeps them.
		var sum byte
		for i := 0; i < len(data); i += os.Getpagesize() {
			sum += data[i]
		}
		fmt.Printf("page sum %d\n", sum)
		return int64(len(data)), nil
	case "mapwrite":
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			return 0, err
		}
		data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return 0, fmt.Errorf("mmap: %w", err)
		}
		for i := range data {
			data[i] = byte(i%251 + 1)
		}
		if err := unix.Msync(data, unix.MS_SYNC); err != nil {
			unix.Munmap(data)
			return 0, fmt.Errorf("msync: %w", err)
		}
		if err := unix.Munmap(data); err != nil {
			return 0, fmt.Errorf("munmap: %w", err)
		}
		return size, nil
	case "write":
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return 0, err
		}
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = byte(i%253 + 1)
		}
		var n int64
		for n < size {
			w, err := f.Write(buf[:min(int64(len(buf)), size-n)])
			n += int64(w)
			if err != nil {
				f.Close()
				return n, err
			}
		}
		return n, f.Close()
	}
	return 0, fmt.Errorf("no action %q (read, mapread, mapwrite, write)", action)
}
