#!/usr/bin/env bash
# The arm64 Debian userland of `make test-arm` and `make e2e-arm`: checks that arm64 executables
# run through qemu-aarch64 (binfmt_misc, fix-binary flag), builds the userland once per
# build-rootfs.sh under /var/cache/pi-infer-ci (~5 min, 330 MB) and prints its path.
# usage (as root): userland.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=/var/cache/pi-infer-ci
mkdir -p "$cache"
exec 9>"$cache/arm-rootfs.lock"
flock 9

# Debian registers qemu-aarch64 with the F flag: the kernel opens the emulator once, so a chroot
# or a container needs no copy of it. It stays registered, as on any host with the package.
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 2>/dev/null || true
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 &&
    grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 || {
    echo "qemu-aarch64 is not registered in binfmt_misc with the F flag" \
         "(the qemu-user-static package does that)" >&2; exit 1; }

rootfs=$cache/arm-rootfs-$(sha256sum <"$here/build-rootfs.sh" | cut -c1-12)
if [ ! -e "$rootfs/.complete" ]; then
    echo "building $rootfs (once per build-rootfs.sh)" >&2
    rm -rf --one-file-system "$rootfs"
    "$here/build-rootfs.sh" "$rootfs" >"$cache/arm-rootfs.log" 2>&1 || {
        tail -n 30 "$cache/arm-rootfs.log" >&2; exit 1; }
    touch "$rootfs/.complete"
fi
# Last used; userlands of other definitions (other branches) go after a month unused.
touch "$rootfs"
find "$cache" -maxdepth 1 -name 'arm-rootfs-*' -type d -mtime +30 \
    -exec rm -rf --one-file-system {} +
echo "$rootfs"
