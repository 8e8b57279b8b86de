#!/usr/bin/env bash
# `make test-arm`: pi-infer on an emulated Raspberry Pi 4 CPU (Cortex-A72), see proof.py.
# Usage (as root): run.sh PYTHON SHARED
#   PYTHON  the test venv's interpreter (opencv, pyyaml), which drives the proof
#   SHARED  the shared/ directory with images/ and models/
# ARM_TORCH=2.10.0 (ARM_TORCHVISION defaults to its pair, 0.<minor+15>.<patch>) installs that torch
# instead of the pinned one: the proof must then fail with pi-infer's refusal.
# ARM_PREPARE=1 only builds the caches below and stops before the proof (.ci/run warms them so).
# Cached under /var/cache/pi-infer-ci, each keyed by what defines it: the arm64 userland
# (userland.sh, build-rootfs.sh; ~5 min, 330 MB) and each set of aarch64 wheels (install-site.sh
# and the requirements; ~30 s, 800 MB).
set -euo pipefail
python=${1:?usage: run.sh PYTHON SHARED}
shared=$(cd "${2:?usage: run.sh PYTHON SHARED}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=/var/cache/pi-infer-ci
torch=${ARM_TORCH:-}

[ "$(id -u)" = 0 ] || { echo "test-arm: must run as root (chroot, mount, binfmt_misc)" >&2; exit 1; }
"$repo/packaging/ensure-system-packages" test-arm
mkdir -p "$cache"
exec 9>"$cache/arm.lock"
flock 9

phase() {  # phase NAME START: print how long the phase took
    awk -v n="$1" -v s="$2" -v e="$EPOCHREALTIME" 'BEGIN { printf "phase %s: %.1f s\n", n, e - s }'
}

start=$EPOCHREALTIME
rootfs=$(bash "$here/userland.sh")
phase userland "$start"

start=$EPOCHREALTIME
requirements=$(cat "$repo/packaging/constraints-aarch64.txt")
if [ -n "$torch" ]; then
    IFS=. read -r _ minor patch <<<"$torch"
    vision=${ARM_TORCHVISION:-0.$((minor + 15)).$patch}
    requirements=$(sed -e "s/^torch==.*/torch==$torch/" -e "s/^torchvision==.*/torchvision==$vision/" \
        <<<"$requirements")
    echo "ARM_TORCH: installing torch==$torch torchvision==$vision instead of the pinned pair"
fi
site=$cache/arm-site-$( { cat "$here/install-site.sh"; echo "$requirements"; } | sha256sum | cut -c1-12)
if [ ! -e "$site/.complete" ]; then
    echo "installing the aarch64 wheels into $site (once per requirement set)"
    rm -rf "$site"
    mkdir -p "$site"
    echo "$requirements" >"$site/requirements.txt"
    "$here/install-site.sh" "$python" "$site" "$site/requirements.txt"
    touch "$site/.complete"
fi
touch "$site"  # last used; wheel sets unused for a month (older pins, ARM_TORCH runs) go
find "$cache" -maxdepth 1 -name 'arm-site-*' -type d -mtime +30 -exec rm -rf {} +
phase wheels "$start"

# The xnnpack engine's aarch64 wheels (ExecuTorch), a set of their own, beside the pinned ones:
# the aarch64 lines of packaging/xnnpack-requirements.txt, markers dropped (pip would evaluate them
# for this host). ARM_XNNPACK=0 skips it; ARM_XNNPACK_CACHE puts the set elsewhere.
xsite=
if [ "${ARM_XNNPACK:-1}" = 1 ] && [ -z "$torch" ]; then
    start=$EPOCHREALTIME
    xrequirements=$(sed -n -e '/^#/d' -e '/^$/d' -e '/platform_machine == "aarch64"/{s/ *;.*//;p;d}' \
        -e '/;/d' -e p "$repo/packaging/xnnpack-requirements.txt")
    xcache=${ARM_XNNPACK_CACHE:-$cache}
    xsite=$xcache/arm-xnnpack-$( { cat "$here/install-site.sh"; echo "$xrequirements"; } |
        sha256sum | cut -c1-12)
    if [ ! -e "$xsite/.complete" ]; then
        echo "installing the aarch64 ExecuTorch wheels into $xsite"
        rm -rf "$xsite"
        mkdir -p "$xsite"
        echo "$xrequirements" >"$xsite/requirements.txt"
        "$here/install-site.sh" "$python" "$xsite" "$xsite/requirements.txt"
        touch "$xsite/.complete"
    fi
    echo "xnnpack wheels: $(du -sm --exclude=requirements.txt "$xsite" | cut -f1) MB"
    phase xnnpack-wheels "$start"
fi

[ "${ARM_PREPARE:-0}" = 1 ] && { echo "test-arm: caches ready (ARM_PREPARE=1: no proof run)"; exit 0; }

# A private mount namespace: proc, sys and the wheels mounted into the userland vanish with it.
export PI_INFER_SHARED=$shared
exec unshare --mount --propagation private -- "$python" "$here/proof.py" \
    --rootfs "$rootfs" --site "$site" ${torch:+--torch-override} ${xsite:+--xnnpack-site "$xsite"}
