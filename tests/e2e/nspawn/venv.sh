#!/usr/bin/env bash
# Build, once per definition, the venv that the container's unit runs, and print its path.
# It uses Debian's /usr/bin/python3.11, not a pyenv interpreter under /root: the unit's
# ProtectHome= hides home directories. pi-infer itself is installed per run, in the container.
# Usage: venv.sh REPO   (REPO's pyproject.toml dependencies are part of the definition)
set -euo pipefail
repo=${1:?usage: venv.sh REPO}
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3.11
# Pinned like the dev venv; pyproject's own dependencies are added so that pip check passes.
pins=(torch==2.14.1 torchvision==0.29.1 opencv-contrib-python-headless numpy sdnotify pyyaml)
mapfile -t deps < <("$python" -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f).get("project", {}).get("dependencies", [])))
' "$repo/pyproject.toml" | sed '/^$/d')
hash=$( { cat "$here/venv.sh"; printf '%s\n' "${deps[@]}"; } | sha256sum | cut -c1-12)
cache=/var/cache/pi-infer-ci
venv=$cache/nspawn-venv-$hash
mkdir -p "$cache"
exec 9>"$cache/nspawn-venv.lock"
flock 9
if [ ! -e "$venv/.complete" ]; then
    echo "building $venv (once; torch comes from the local wheel cache)" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    "$venv/bin/pip" install --quiet "${pins[@]}" "${deps[@]}" >&2
    touch "$venv/.complete"
    # Older definitions are ~6 GB each (CUDA torch wheel); keep only the current one.
    for old in "$cache"/nspawn-venv-*/; do
        [ "${old%/}" = "$venv" ] || [ ! -e "$old.complete" ] || rm -rf "${old%/}"
    done
fi
echo "$venv"
