#!/bin/bash
# Run the four cases of the README's "Seeing the kernel at work" on this
# machine with mmapfs trace, and write each one's timeline and summary (and
# the throttle case's plot) into OUT (default scripts/trace-examples, where the
# README's outputs come from):
#   scripts/trace-examples.sh [OUT]
# Needs root, go, gnuplot-nox, fuse3. The clients that map files are the
# integration test binary in its trace-client role (integration/traceclient_test.go).
# The integration tests TestTraceColdRead, TestTraceMappedWrite,
# TestTraceThrottle and TestTraceMappedRead check what these outputs show.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-scripts/trace-examples}")
mkdir -p "$out"
work=$(mktemp -d /tmp/mmapfs-trace-examples.XXXXXX)
store=$work/store mnt=$work/mnt
mkdir -p "$store" "$mnt"
daemon=""

cleanup() {
	if [ -n "$daemon" ]; then
		kill "$daemon" 2>/dev/null || true
		wait "$daemon" 2>/dev/null || true
	fi
	if mountpoint -q "$mnt"; then umount "$mnt" || umount -l "$mnt"; fi
	rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/mmapfs" ./cmd/mmapfs
go test -c -o "$work/client" ./integration

# mnt_up FLAGS...: mount the store with FLAGS and wait until it serves.
mnt_up() {
	"$work/mmapfs" mount "$@" "$store" "$mnt" >"$work/daemon.log" 2>&1 &
	daemon=$!
	for _ in $(seq 100); do
		grep -q "serving" "$work/daemon.log" && return 0
		sleep 0.1
	done
	cat "$work/daemon.log" >&2
	exit 1
}

# mnt_down: unmount and wait for the daemon.
mnt_down() {
	kill -INT "$daemon"
	wait "$daemon" || true
	daemon=""
}

# cold FILE: sync FILE of the store and drop it from the page cache.
cold() {
	sync "$store/$1"
	dd if="$store/$1" iflag=nocache count=0 status=none
}

# trace NAME ARGS...: mmapfs trace ARGS, its output into OUT/NAME.txt (the
# traced command's output and the trace's notes into OUT/NAME.stderr).
trace() {
	local name=$1
	shift
	"$work/mmapfs" trace "$@" >"$out/$name.txt" 2>"$out/$name.stderr"
}

# 1. A cold sequential read of a 64 MiB file.
dd if=/dev/urandom of="$store/big" bs=1M count=64 status=none
for view in timeline summary; do
	cold big
	mnt_up
	flags=()
	[ "$view" = summary ] && flags=(--summary)
	trace "1-cold-read.$view" "$mnt" "${flags[@]}" -- dd if="$mnt/big" of=/dev/null bs=4k status=none
	mnt_down
done

# 2. A client stores into a MAP_SHARED mapping, then msyncs.
for view in timeline summary; do
	rm -f "$store/mapped"
	mnt_up
	flags=()
	[ "$view" = summary ] && flags=(--summary)
	trace "2-mapped-write.$view" "$mnt" "${flags[@]}" -- env MMAPFS_INTEGRATION_ROLE=trace-client "$work/client" mapwrite "$mnt/mapped" $((1 << 20))
	mnt_down
done

# 3. A 256 MiB writer, the kernel's 1 % budget against a relaxed one
# (both with the writeback cache: without it no write dirties the mount).
for budget in strict relaxed; do
	rm -f "$store/log"
	flags=(--writeback-cache)
	[ "$budget" = relaxed ] && flags+=(--bdi-max-ratio 50 --bdi-strict-limit 0)
	mnt_up "${flags[@]}"
	plot=()
	[ "$budget" = strict ] && plot=(--plot "$out/3-throttle.png")
	trace "3-throttle-$budget.summary" "$mnt" --summary "${plot[@]}" -- env MMAPFS_INTEGRATION_ROLE=trace-client "$work/client" write "$mnt/log" $((256 << 20))
	mnt_down
done

# 4. A client reads a 4 MiB file through a MAP_SHARED mapping.
dd if=/dev/urandom of="$store/m4" bs=1M count=4 status=none
for view in timeline summary; do
	cold m4
	mnt_up
	flags=()
	[ "$view" = summary ] && flags=(--summary)
	trace "4-mapped-read.$view" "$mnt" "${flags[@]}" -- env MMAPFS_INTEGRATION_ROLE=trace-client "$work/client" mapread "$mnt/m4"
	mnt_down
done

echo "wrote the outputs to $out:"
ls -l "$out"
