#!/bin/bash
# Build the guest image from Debian packages: the stock Debian 12 kernel, a minbase rootfs
# with systemd as PID 1, udev and the kernel's vivid module, a busybox initramfs, and an
# ext4 image of the rootfs. Output: OUT/{vmlinuz,initrd.img,rootfs.ext4}.
#
# Usage: build.sh OUT     (as root; downloaded packages are kept in OUT/../debs)
set -euo pipefail

out=$1
debs=$(dirname "$out")/debs
here=$(cd "$(dirname "$0")" && pwd)
# procps: /bin/kill for ExecReload; libnss-systemd: names for DynamicUser; v4l-utils: v4l2-ctl.
pkgs=systemd,systemd-sysv,udev,kmod,procps,libnss-systemd,python3,v4l-utils

log() { printf '[image] %s\n' "$*" >&2; }

mkdir -p "$out" "$debs"
work=$out/build
root=$work/rootfs
mkdir -p "$work"

kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
kver=${kpkg#linux-image-}
log "kernel $kver, busybox-static"
(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$kpkg" busybox-static)
dpkg-deb -x "$work/${kpkg}"_*.deb "$work/kernel"
dpkg-deb -x "$work"/busybox-static_*.deb "$work/busybox"

log "rootfs: debootstrap bookworm minbase + $pkgs"
debootstrap --variant=minbase --include="$pkgs" --cache-dir="$debs" bookworm "$root" \
  > "$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

log "rootfs: kernel modules"
mkdir -p "$root/tmp/kmod/lib/modules"
cp -a "$work/kernel/lib/modules/$kver" "$root/tmp/kmod/lib/modules/"
chroot "$root" depmod -b /tmp/kmod "$kver"
python3 "$here/kmods.py" "$root/tmp/kmod/lib/modules/$kver" "$root/lib/modules/$kver" "$work/initrd.modules"
rm -rf "$root/tmp/kmod"
chroot "$root" depmod "$kver"

log "rootfs: configuration"
echo pi-infer-e2e > "$root/etc/hostname"
echo '/dev/vda / ext4 rw,relatime 0 0' > "$root/etc/fstab"
# Nothing the test does not need: no logins, no timers, no network time, no binfmt_misc.
chroot "$root" systemctl mask -q getty@tty1.service serial-getty@ttyS0.service \
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer systemd-timesyncd.service \
  proc-sys-fs-binfmt_misc.automount systemd-binfmt.service
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$root/etc/systemd/journald.conf.d/e2e.conf"
install -m 755 "$here/e2e-run" "$root/usr/local/sbin/e2e-run"
install -m 644 "$here/e2e.service" "$root/etc/systemd/system/e2e.service"
chroot "$root" systemctl enable -q e2e.service
rm -rf "$root/var/cache/apt/"*.bin "$root/var/lib/apt/lists/"* \
  "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info"

log "initramfs"
initrd=$work/initrd
mkdir -p "$initrd"/{bin,dev,proc,sys,newroot,mods}
cp "$work/busybox/bin/busybox" "$initrd/bin/busybox"
install -m 755 "$here/initrd-init" "$initrd/init"
while read -r m; do
  cp "$root/lib/modules/$kver/$m" "$initrd/mods/"
  basename "$m" >> "$initrd/mods/order"
done < "$work/initrd.modules"
(cd "$initrd" && find . | "$work/busybox/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1) \
  > "$out/initrd.img"

log "ext4 image"
cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz"
# Free space for what the test writes; snapshot=on keeps the writes out of this file.
size=$(($(du -sm "$root" | cut -f1) + 512))
mkfs.ext4 -q -F -L pi-infer-e2e -d "$root" "$out/rootfs.ext4" "${size}M" > /dev/null
rm -rf "$work"
log "done: $(du -sh "$out" | cut -f1)"
