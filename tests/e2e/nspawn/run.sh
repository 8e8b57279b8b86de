#!/usr/bin/env bash
# `make e2e`: prove pi-infer under a real systemd 252 booted in systemd-nspawn (see proof.py).
# Usage (as root): run.sh PYTHON SHARED
#   PYTHON  an interpreter with opencv and pyyaml (the test venv's) that drives the proof
#   SHARED  the shared/ directory with images/ and models/
# Everything the container writes lands in memory; on the host only $work and the venv cache change.
set -euo pipefail
python=${1:?usage: run.sh PYTHON SHARED}
shared=$(cd "${2:?usage: run.sh PYTHON SHARED}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
work=/var/tmp/pi-infer-nspawn-work

[ "$(id -u)" = 0 ] || { echo "e2e: must run as root (mount, systemd-nspawn, nsenter)" >&2; exit 1; }
"$repo/packaging/ensure-system-packages" e2e
mkdir -p "$work"
exec 8>"$work/lock"
flock -n 8 || { echo "e2e: another run is using $work" >&2; exit 1; }

start=$EPOCHREALTIME
venv=$(bash "$here/venv.sh" "$repo")
awk -v s="$start" -v e="$EPOCHREALTIME" 'BEGIN { printf "phase venv: %.1f s\n", e - s }'
# A private mount namespace: the root bind and nspawn's own mounts never reach the host.
exec unshare --mount --propagation private -- "$python" "$here/proof.py" \
    --repo "$repo" --shared "$shared" --venv "$venv" --work "$work"
