#!/usr/bin/env bash
# One-time (and idempotent) set-up on a machine that has only Node and npm:
# pnpm, the workspace's dependencies, a build of every package, and a QEMU with vfio-user-pci.
set -euo pipefail
cd "$(dirname "$0")/.."
PNPM_VERSION=12.21.0
say() { echo "[setup] $*" >&2; }

if ! command -v pnpm >/dev/null || [[ "$(pnpm --version 2>/dev/null)" != "$PNPM_VERSION" ]]; then
  say "installing pnpm $PNPM_VERSION with npm"
  if ! npm install -g --silent "pnpm@$PNPM_VERSION" >&2; then
    # Without rights to the global prefix: a prefix of our own.
    PREFIX="${VFU_CACHE:-$HOME/.cache/vfio-user-ts}/npm-global"
    npm install -g --silent --prefix "$PREFIX" "pnpm@$PNPM_VERSION" >&2
    export PATH="$PREFIX/bin:$PATH"
  fi
fi

say "pnpm install"
pnpm install --frozen-lockfile --reporter=silent >&2 || pnpm install --reporter=silent >&2
say "building"
pnpm exec nx run-many -t build --outputStyle=static >&2
say "QEMU"
export QEMU="$(bash tools/qemu/provision.sh)"
say "ready (QEMU: $QEMU)"
