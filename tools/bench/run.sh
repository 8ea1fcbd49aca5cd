#!/usr/bin/env bash
# Runs the benchmarks with every process pinned to one CPU when taskset exists (as the
# toolchain study measured: without it, this VM's cross-CPU wake-ups dominate small messages).
set -euo pipefail
cd "$(dirname "$0")"
pin=()
if command -v taskset >/dev/null; then pin=(taskset -c 1); export BENCH_PINNED=1; fi
"${pin[@]}" node dist/region.js
"${pin[@]}" node dist/migration.js
"${pin[@]}" node dist/guest.js
"${pin[@]}" node dist/virtio-blk.js
"${pin[@]}" node dist/remote.js
