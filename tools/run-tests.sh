#!/usr/bin/env bash
# Runs every project's tests through Nx and ends with one line: "tests: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
export VFU_REPORT_DIR="$PWD/.vfu-test/reports"
rm -rf "$VFU_REPORT_DIR"; mkdir -p "$VFU_REPORT_DIR"
[[ -n "${QEMU:-}" ]] || export QEMU="$(bash tools/qemu/provision.sh)"
bash tools/lint.sh || exit 1
pnpm exec nx run-many -t typecheck --outputStyle=static || exit 1
pnpm exec nx run-many -t test --outputStyle=stream --parallel=1 "$@"
status=$?
node tools/test-summary.mjs "$VFU_REPORT_DIR" || status=1
exit $status
