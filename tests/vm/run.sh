#!/usr/bin/env bash
# The one qemu VM runner of the test suite (tests/common/vm.rs calls it): boots the current Debian
# kernel under qemu (TCG) with an initramfs of busybox, the kernel modules asked for, the programs
# asked for (with the shared libraries ldd lists) and the guest files; tests/vm/init loads the
# modules and runs the guest script. Prints the guest's console; result lines start with KIRQ-VM.
#
# usage: tests/vm/run.sh CACHE_DIR WORK_DIR GUEST FILES_DIR MODULES [SRC=DEST]...
#   CACHE_DIR  keeps the downloaded kernel package and the files taken from it
#   WORK_DIR   scratch space for the initramfs
#   GUEST      the script the guest's /init sources after loading the modules (tests/vm/*.sh)
#   FILES_DIR  guest files, copied to /kirq
#   MODULES    kernel modules in load order, space separated, as paths below the package's
#              lib/modules/VERSION/kernel/ (e.g. "fs/fuse/fuse.ko fs/fuse/cuse.ko")
#   SRC=DEST   a program to put at DEST in the guest, without debug info
# environment: KIRQ_VM_MEMORY_MB (768), KIRQ_VM_TIMEOUT_SECS (240)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=$1 work=$2 guest=$3 files=$4 modules=$5
shift 5
memory=${KIRQ_VM_MEMORY_MB:-768} limit=${KIRQ_VM_TIMEOUT_SECS:-240}
mkdir -p "$cache" "$work"
t_start=$(date +%s.%N)

for p in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio dpkg-deb:dpkg \
         strip:binutils gzip:gzip apt-get:apt; do
  command -v "${p%%:*}" >/dev/null || { echo "error: ${p%%:*} is missing: apt-get install ${p#*:}" >&2; exit 2; }
done

# 1. The kernel: vmlinuz and the modules out of the Debian kernel package, kept in
#    CACHE_DIR/VERSION/ (the package itself is kept too, so other modules need no download).
deb=$(ls "$cache"/linux-image-*-amd64_*.deb 2>/dev/null | head -n1 || true)
if [ -n "$deb" ]; then
  pkg=$(basename "$deb" | sed -E 's/_.*//')
else
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$pkg" ]; then
    apt-get update -qq >/dev/null
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
  [ -n "$pkg" ] || { echo "error: cannot find the Debian kernel package (apt-cache depends linux-image-amd64); run apt-get update as root" >&2; exit 2; }
fi
ver=${pkg#linux-image-}
tree="$cache/$ver"
members=("./boot/vmlinuz-$ver")
for m in $modules; do members+=("./lib/modules/$ver/kernel/$m"); done
missing=()
for m in "${members[@]}"; do [ -f "$tree/$m" ] || missing+=("$m"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ -z "$deb" ]; then
    echo "== downloading $pkg"
    (cd "$cache" && apt-get download -q "$pkg" 2>&1 | grep -v "^W: Download is performed unsandboxed" >&2 || true)
    deb=$(ls "$cache"/linux-image-*-amd64_*.deb | head -n1)
  fi
  mkdir -p "$tree"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tree" "${missing[@]}"
fi

# 2. The initramfs: busybox, the modules, the programs with the libraries ldd lists, the files.
root="$work/root"
rm -rf "$root" && mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules,kirq,etc}
cp "$(command -v busybox)" "$root/bin/busybox"
: > "$root/kirq/modules"
for m in $modules; do
  cp "$tree/lib/modules/$ver/kernel/$m" "$root/lib/modules/"
  basename "$m" >> "$root/kirq/modules"
done
for b in "$@"; do
  src=${b%%=*} dst=${b#*=}
  mkdir -p "$root$(dirname "$dst")"
  strip --strip-debug -o "$root$dst" "$src"
  for lib in $(ldd "$src" | grep -oE '/[^ ]+\.so[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
  done
done
cp -r "$files"/. "$root/kirq/"
cp "$guest" "$root/kirq/guest.sh"
# `localhost` must resolve without DNS (the demo's hub and daemon find each other by that name).
echo "127.0.0.1 localhost" > "$root/etc/hosts"
echo "hosts: files" > "$root/etc/nsswitch.conf"
cp "$here/init" "$root/init" && chmod 755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"
t_built=$(date +%s.%N)

# 3. Boot under TCG (default CPU model: no RDRAND, so the CRNG starts unseeded).
timeout "$limit" qemu-system-x86_64 -accel tcg -m "$memory" -smp 1 -nographic -no-reboot -nodefaults \
  -serial stdio -kernel "$tree/boot/vmlinuz-$ver" -initrd "$work/initrd.gz" \
  -append 'console=ttyS0 panic=-1 quiet' </dev/null | tr -d '\r'
t_end=$(date +%s.%N)
awk -v a="$t_start" -v b="$t_built" -v c="$t_end" -v k="$ver" \
  'BEGIN { printf "KIRQ-VM host build_s=%.1f boot_to_poweroff_s=%.1f kernel=%s\n", b - a, c - b, k }'
