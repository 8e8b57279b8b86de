#!/usr/bin/env bash
# `make e2e-arm`: the Raspberry Pi user's path (`sudo make install`, systemctl, journalctl) on the
# arm64 userland of `make test-arm`, booted with systemd as PID 1 in systemd-nspawn under QEMU
# user emulation as a Cortex-A72 (see pi_user.py).
# Usage (as root): run.sh PYTHON SHARED
#   PYTHON  an interpreter with opencv and pyyaml (the test venv's) that drives the proof
#   SHARED  the shared/ directory with images/ and models/
# Cached under /var/cache/pi-infer-ci, each keyed by what defines it: the userland
# (../../arm/userland.sh) and the aarch64 wheels (wheelhouse.sh). Everything the container writes
# lands in memory; on the host only the cache directory changes.
set -euo pipefail
python=${1:?usage: run.sh PYTHON SHARED}
shared=$(cd "${2:?usage: run.sh PYTHON SHARED}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cache=/var/cache/pi-infer-ci
work=$cache/e2e-arm-work

[ "$(id -u)" = 0 ] || { echo "e2e-arm: must run as root (binfmt_misc, mount, systemd-nspawn)" >&2; exit 1; }
"$repo/packaging/ensure-system-packages" e2e-arm
mkdir -p "$work"
exec 8>"$work/lock"
flock -n 8 || { echo "e2e-arm: another run is using $work" >&2; exit 1; }
# `make test-arm` rebuilds the userland when its definition changes: not while this runs.
exec 9>"$cache/arm.lock"
flock 9

phase() {  # phase NAME START: print how long the phase took
    awk -v n="$1" -v s="$2" -v e="$EPOCHREALTIME" 'BEGIN { printf "phase %s: %.1f s\n", n, e - s }'
}
start=$EPOCHREALTIME
rootfs=$(bash "$repo/tests/arm/userland.sh")
phase userland "$start"
start=$EPOCHREALTIME
wheels=$(TMPDIR=$work bash "$here/wheelhouse.sh" "$python" "$repo")
phase wheels "$start"
# A private mount namespace: the root bind and nspawn's own mounts never reach the host.
exec unshare --mount --propagation private -- "$python" "$here/pi_user.py" \
    --repo "$repo" --shared "$shared" --rootfs "$rootfs" --wheels "$wheels" --work "$work"
