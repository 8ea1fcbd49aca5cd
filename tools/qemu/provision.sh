#!/usr/bin/env bash
# Prints the path of a QEMU (>= 11.1) binary with vfio-user-pci, provisioning it once if needed.
#
#   $QEMU set            -> used as is.
#   otherwise            -> QEMU 11.1.3 from Debian trixie-backports, unpacked into a trixie
#                           minbase root under $VFU_CACHE (default ~/.cache/vfio-user-ts) and
#                           run through trixie's own dynamic loader (no chroot, no mounts).
# Progress goes to stderr; only the binary's path goes to stdout.
set -euo pipefail

say() { echo "[qemu] $*" >&2; }

if [[ -n "${QEMU:-}" ]]; then
  [[ -x "$QEMU" ]] || { say "QEMU=$QEMU is not executable"; exit 1; }
  echo "$QEMU"; exit 0
fi

CACHE="${VFU_CACHE:-$HOME/.cache/vfio-user-ts}"
ROOT="$CACHE/qemu-trixie"
WRAPPER="$CACHE/bin/qemu-system-x86_64"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [[ -x "$WRAPPER" && -f "$ROOT/.complete" ]]; then echo "$WRAPPER"; exit 0; fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [[ -x "$WRAPPER" && -f "$ROOT/.complete" ]]; then echo "$WRAPPER"; exit 0; fi

if [[ $(id -u) -ne 0 ]]; then say "provisioning needs root (debootstrap); or set QEMU=/path/to/qemu-system-x86_64"; exit 1; fi

if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap from Debian's archive"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } >"$CACHE/apt.log" 2>&1 \
    || { tail -20 "$CACHE/apt.log" >&2; exit 1; }
fi

rm -rf "$ROOT"; mkdir -p "$ROOT" "$CACHE/bin"
say "debootstrap trixie minbase into $ROOT (about a minute, once)"
debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
  || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }

say "installing qemu-system-x86 from trixie-backports"
echo "deb $MIRROR trixie-backports main" > "$ROOT/etc/apt/sources.list.d/backports.list"
{ chroot "$ROOT" apt-get update -qq && chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends -t trixie-backports qemu-system-x86; } \
  >"$CACHE/qemu-install.log" 2>&1 || { tail -20 "$CACHE/qemu-install.log" >&2; exit 1; }
rm -rf "$ROOT/var/lib/apt/lists"/* "$ROOT/var/cache/apt/archives"/*.deb

cat > "$WRAPPER" <<WRAP
#!/bin/sh
# QEMU from trixie-backports, run with trixie's own loader and libraries.
R="$ROOT"
export QEMU_MODULE_DIR="\$R/usr/lib/x86_64-linux-gnu/qemu"
exec "\$R/lib64/ld-linux-x86-64.so.2" --library-path "\$R/lib/x86_64-linux-gnu:\$R/usr/lib/x86_64-linux-gnu" \
  "\$R/usr/bin/qemu-system-x86_64" -L "\$R/usr/share/qemu" -L "\$R/usr/share/seabios" "\$@"
WRAP
chmod +x "$WRAPPER"
"$WRAPPER" --version | head -1 >&2
"$WRAPPER" -device help 2>/dev/null | grep -q vfio-user-pci || { say "this QEMU lacks vfio-user-pci"; exit 1; }
touch "$ROOT/.complete"
say "ready: $WRAPPER"
echo "$WRAPPER"
