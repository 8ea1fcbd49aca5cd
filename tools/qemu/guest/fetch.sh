#!/usr/bin/env bash
# Prints a directory with Debian's kernel (vmlinuz), the modules the guest checks need and a
# static busybox, fetched from Debian's archive once and cached ($VFU_CACHE, default
# ~/.cache/vfio-user-ts). Progress on stderr.
set -euo pipefail
say() { echo "[guest] $*" >&2; }
CACHE="${VFU_CACHE:-$HOME/.cache/vfio-user-ts}/guest"
if [[ -f "$CACHE/.complete" ]]; then echo "$CACHE"; exit 0; fi
rm -rf "$CACHE"; mkdir -p "$CACHE/modules"; cd "$CACHE"
pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
K=$(pkg)
if [[ -z "$K" ]]; then say "apt-get update"; apt-get update -qq >&2; K=$(pkg); fi
say "downloading $K and busybox-static from Debian's archive (once)"
apt-get download -o APT::Sandbox::User=root "$K" busybox-static >&2 2>"$CACHE/apt.log" || { apt-get update -qq >&2; apt-get download -o APT::Sandbox::User=root "$K" busybox-static >&2; }
mkdir x
for d in *.deb; do dpkg-deb -x "$d" x; done
cp x/boot/vmlinuz-* vmlinuz
for m in gpio/gpio-pci-idio-16 uio/uio uio/uio_pci_generic; do
  f=$(find x/lib/modules -path "*/drivers/$m.ko*" | head -1)
  [[ -n "$f" ]] || { say "module $m not found in $K"; exit 1; }
  case "$f" in *.xz) xz -dc "$f" > "modules/$(basename "$m").ko";; *.zst) zstd -qdc "$f" > "modules/$(basename "$m").ko";; *) cp "$f" "modules/$(basename "$m").ko";; esac
done
cp x/bin/busybox busybox
rm -rf x *.deb
echo "$K" > kernel-package
touch .complete
say "ready: $CACHE ($K)"
echo "$CACHE"
