#!/usr/bin/env bash
# Boots a Debian kernel that has cuse.ko under qemu (TCG) with kirqd in an initramfs and runs the
# device checks (or the benchmark) in the guest. Prints the guest's console; result lines start
# with KIRQ-VM or KIRQ-PROBE.
#
# usage: tests/vm/run.sh CACHE_DIR WORK_DIR KIRQD FILES_DIR [check|bench]
#   CACHE_DIR  keeps the downloaded kernel package and the three files taken from it
#   WORK_DIR   scratch space for the initramfs
#   KIRQD      the kirqd binary to test (stripped into the initramfs)
#   FILES_DIR  guest files: kirqd.toml, keys, certificates, spool.bin, name (the device name)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=$1 work=$2 kirqd=$3 files=$4 mode=${5:-check}
mkdir -p "$cache" "$work"
t_start=$(date +%s.%N)

for p in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio dpkg-deb:dpkg \
         strip:binutils gzip:gzip apt-get:apt; do
  command -v "${p%%:*}" >/dev/null || { echo "error: ${p%%:*} is missing: apt-get install ${p#*:}" >&2; exit 2; }
done

# 1. The kernel: vmlinuz, fuse.ko and cuse.ko out of the current Debian kernel package (cached).
if [ ! -f "$cache/vmlinuz" ] || [ ! -f "$cache/cuse.ko" ] || [ ! -f "$cache/fuse.ko" ]; then
  deb=$(ls "$cache"/linux-image-*-amd64_*.deb 2>/dev/null | head -n1 || true)
  if [ -z "$deb" ]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    if [ -z "$pkg" ]; then
      apt-get update -qq >/dev/null
      pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    fi
    [ -n "$pkg" ] || { echo "error: cannot find the Debian kernel package (apt-cache depends linux-image-amd64)" >&2; exit 2; }
    echo "== downloading $pkg"
    (cd "$cache" && apt-get download -q "$pkg" 2>&1 | grep -v "^W: Download is performed unsandboxed" >&2 || true)
    deb=$(ls "$cache"/linux-image-*-amd64_*.deb | head -n1)
  fi
  ver=$(basename "$deb" | sed -E 's/^linux-image-(.*-amd64)_.*/\1/')
  rm -rf "$cache/x" && mkdir -p "$cache/x"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$cache/x" "./boot/vmlinuz-$ver" \
    "./lib/modules/$ver/kernel/fs/fuse/fuse.ko" "./lib/modules/$ver/kernel/fs/fuse/cuse.ko"
  mv "$cache/x/boot/vmlinuz-$ver" "$cache/vmlinuz"
  mv "$cache/x/lib/modules/$ver/kernel/fs/fuse/fuse.ko" "$cache/x/lib/modules/$ver/kernel/fs/fuse/cuse.ko" "$cache/"
  echo "$ver" > "$cache/version"
  rm -rf "$cache/x"
fi

# 2. The initramfs: busybox, the modules, kirqd with the libraries ldd lists, the guest files.
root="$work/root"
rm -rf "$root" && mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules,kirq}
cp "$(command -v busybox)" "$root/bin/busybox"
cp "$cache/fuse.ko" "$cache/cuse.ko" "$root/lib/modules/"
strip -o "$root/kirqd" "$kirqd"
for lib in $(ldd "$kirqd" | grep -oE '/[^ ]+\.so[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
done
cp -r "$files"/. "$root/kirq/"
# `localhost` must resolve without DNS (the demo's hub and daemon find each other by that name).
mkdir -p "$root/etc"
echo "127.0.0.1 localhost" > "$root/etc/hosts"
echo "hosts: files" > "$root/etc/nsswitch.conf"
echo "$mode" > "$root/kirq/mode"
cp "$here/init" "$root/init" && chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"
t_built=$(date +%s.%N)

# 3. Boot under TCG (default CPU model: no RDRAND, so the CRNG starts unseeded).
timeout 240 qemu-system-x86_64 -accel tcg -m 768 -smp 1 -nographic -no-reboot -nodefaults \
  -serial stdio -kernel "$cache/vmlinuz" -initrd "$work/initrd.gz" \
  -append 'console=ttyS0 panic=-1 quiet' </dev/null | tr -d '\r'
t_end=$(date +%s.%N)
awk -v a="$t_start" -v b="$t_built" -v c="$t_end" -v k="$(cat "$cache/version")" \
  'BEGIN { printf "KIRQ-VM host build_s=%.1f boot_to_poweroff_s=%.1f kernel=%s\n", b - a, c - b, k }'
