#!/usr/bin/env bash
# Prints a directory with Debian's kernel (vmlinuz), the modules the guest checks need and a
# static busybox, fetched from Debian's archive once and cached ($VFU_CACHE, default
# ~/.cache/vfio-user-ts). Progress on stderr.
set -euo pipefail
say() { echo "[guest] $*" >&2; }
CACHE="${VFU_CACHE:-$HOME/.cache/vfio-user-ts}/guest"
# Paths under the kernel's module tree; each lands as modules/<basename>.ko.
MODULES="drivers/gpio/gpio-pci-idio-16 drivers/uio/uio drivers/uio/uio_pci_generic
  drivers/virtio/virtio drivers/virtio/virtio_ring drivers/virtio/virtio_pci_modern_dev
  drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci drivers/block/virtio_blk
  lib/crc16 crypto/crc32c_generic fs/mbcache fs/jbd2/jbd2 fs/ext4/ext4"
complete() {
  [[ -f "$CACHE/.complete" ]] || return 1
  for m in $MODULES; do [[ -f "$CACHE/modules/$(basename "$m").ko" ]] || return 1; done
}
if complete; then echo "$CACHE"; exit 0; fi
# Test files boot guests in parallel: one fetch at a time, the others wait and reuse it.
mkdir -p "$(dirname "$CACHE")"; exec 9>"$CACHE.lock"; flock 9
if complete; then echo "$CACHE"; exit 0; fi
rm -rf "$CACHE"; mkdir -p "$CACHE/modules"; cd "$CACHE"
pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
K=$(pkg)
if [[ -z "$K" ]]; then say "apt-get update"; apt-get update -qq >&2; K=$(pkg); fi
say "downloading $K and busybox-static from Debian's archive (once)"
apt-get download -o APT::Sandbox::User=root "$K" busybox-static >&2 2>"$CACHE/apt.log" || { apt-get update -qq >&2; apt-get download -o APT::Sandbox::User=root "$K" busybox-static >&2; }
mkdir x
for d in *.deb; do dpkg-deb -x "$d" x; done
cp x/boot/vmlinuz-* vmlinuz
for m in $MODULES; do
  f=$(find x/lib/modules -path "*/kernel/$m.ko*" | head -1)
  [[ -n "$f" ]] || { say "module $m not found in $K"; exit 1; }
  case "$f" in *.xz) xz -dc "$f" > "modules/$(basename "$m").ko";; *.zst) zstd -qdc "$f" > "modules/$(basename "$m").ko";; *) cp "$f" "modules/$(basename "$m").ko";; esac
done
cp x/bin/busybox busybox
rm -rf x *.deb
echo "$K" > kernel-package
touch .complete
say "ready: $CACHE ($K)"
echo "$CACHE"
