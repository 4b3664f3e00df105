#!/bin/sh
# Benchmark mmapfs against native and go-fuse's loopback (see scripts/bench).
# Run as root from anywhere; flags go to the bench, e.g.:
#   scripts/bench.sh -out bench-out          # full run, 3 runs of everything
#   scripts/bench.sh -quick -out /tmp/bq     # smoke run, about two minutes
#   scripts/bench.sh -only curves -out /tmp/bc          # only the scaling curves
#   scripts/bench.sh -quick -only curves -out /tmp/bcq  # their smoke run, about a minute
#   scripts/bench.sh -only mmapfs,mmapfs-uring,createstat,fsync-write,randread-daemon -out /tmp/bt  # the transports on issue 17's workloads
# Needs: go, fio, fuse3 (fusermount3), gnuplot-nox (for ratios.png).
set -e
cd "$(dirname "$0")/.."
exec go run ./scripts/bench "$@"
