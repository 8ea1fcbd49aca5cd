#!/usr/bin/env bash
# Formatting and lint, as CI checks them: Biome (format, lint rules incl. import cycles and
# unused code). `pnpm format` rewrites files to the formatter's layout.
set -euo pipefail
cd "$(dirname "$0")/.."
pnpm exec biome ci --error-on-warnings .
