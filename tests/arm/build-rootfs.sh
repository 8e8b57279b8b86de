#!/bin/sh
# Builds an arm64 Debian bookworm userland (the base of Raspberry Pi OS 64-bit) in DEST.
# The first stage runs natively; the second runs the arm64 maintainer scripts under qemu-user
# through binfmt_misc. python3-pip installs pi-infer in the guest (console script with the guest's
# interpreter) and runs `pip check` there, where markers evaluate as on a Pi.
# /opt/site is where the aarch64 wheels are bind-mounted for a run.
# `make e2e-arm` boots the same userland with systemd as PID 1, as Raspberry Pi OS Lite would:
# hence systemd, dbus (`systemd-run --wait` in `make install` needs the bus), procps (the unit's
# ExecReload= runs its /bin/kill) and sudo, and what the README's Pi walk-through installs (git,
# make, python3-venv).
# usage: build-rootfs.sh DEST   (as root, with qemu-aarch64 registered in binfmt_misc)
set -eu
dest=$1
debootstrap --arch=arm64 --variant=minbase --foreign \
  --include=python3,python3-pip,ca-certificates,python3-venv,git,make,systemd,systemd-sysv,dbus,procps,sudo,passwd bookworm "$dest" http://deb.debian.org/debian
chroot "$dest" /debootstrap/debootstrap --second-stage
rm -rf "$dest/var/cache/apt/archives"/*.deb "$dest/var/lib/apt/lists"/*
mkdir -p "$dest/opt/site"
