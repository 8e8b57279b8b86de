#!/usr/bin/env bash
# The aarch64 wheels a Pi downloads for `make install`, fetched once per definition on the host
# (packaging/constraints-aarch64.txt, extra-wheels.txt, this script) into
# /var/cache/pi-infer-ci/arm-wheels-<hash> (~30 s, 180 MB), and their directory printed. In the
# guest, pip's config points at it instead of PyPI (the container has no network).
# sdnotify ships only as a pure-Python sdist: pip builds it into a wheel on the host.
# usage (as root): wheelhouse.sh PYTHON REPO
set -euo pipefail
python=${1:?usage: wheelhouse.sh PYTHON REPO}
repo=${2:?usage: wheelhouse.sh PYTHON REPO}
here=$(cd "$(dirname "$0")" && pwd)
cache=/var/cache/pi-infer-ci
requirements=$(sed 's/#.*//; /^ *$/d' "$repo/packaging/constraints-aarch64.txt" "$here/extra-wheels.txt")
wheels=$cache/arm-wheels-$( { cat "$here/wheelhouse.sh"; echo "$requirements"; } | sha256sum | cut -c1-12)
mkdir -p "$cache"
exec 9>"$cache/arm-wheels.lock"
flock 9
if [ ! -e "$wheels/.complete" ]; then
    echo "downloading the aarch64 wheels into $wheels (once per requirement set)" >&2
    rm -rf "$wheels"
    mkdir -p "$wheels"
    grep -v '^sdnotify==' <<<"$requirements" >"$wheels/requirements.txt"
    export PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_DISABLE_PIP_VERSION_CHECK=1
    "$python" -m pip download --quiet --progress-bar off --no-deps --dest "$wheels" \
      --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_aarch64 \
      --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 --only-binary=:all: \
      -r "$wheels/requirements.txt" >&2
    "$python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" \
      "$(grep '^sdnotify==' <<<"$requirements")" >&2
    touch "$wheels/.complete"
fi
touch "$wheels"  # last used; sets unused for a month (older pins) go
find "$cache" -maxdepth 1 -name 'arm-wheels-*' -type d -mtime +30 -exec rm -rf {} +
echo "$wheels"
