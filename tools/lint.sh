#!/usr/bin/env bash
# Formatting and lint, as CI checks them: Biome (format, lint rules incl. import cycles and
# unused code), knip (unused exports, files, dependencies), and a 100-column limit.
# `pnpm format` rewrites files to the formatter's layout.
set -euo pipefail
cd "$(dirname "$0")/.."
pnpm exec biome ci --error-on-warnings .
# Unused files, exports and dependencies (knip.json names the entry points).
pnpm exec knip --no-progress
# Biome does not break long strings or comments: no line of TypeScript over 100 columns.
long=$(git ls-files '*.ts' '*.mjs' | xargs awk 'length > 100 { print FILENAME ":" FNR ": " length " columns" }')
if [[ -n "$long" ]]; then
  echo "lines over 100 columns:" >&2
  echo "$long" >&2
  exit 1
fi
