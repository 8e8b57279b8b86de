#!/bin/sh
# Installs a fully pinned list of aarch64/cp311 wheels into DEST from the x86_64 host: pip only
# unpacks them, so nothing runs under emulation. --no-deps because with --platform pip would
# evaluate dependency markers for the host; the list must therefore name every package.
# sdnotify ships only as a pure-Python sdist, which pip builds into a wheel on the host.
# usage: install-site.sh PYTHON DEST REQUIREMENTS
set -eu
python=$1 dest=$2 requirements=$3
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "$python" -m pip install --quiet --progress-bar off \
  --no-deps --target "$dest" --python-version 3.11 --implementation cp --abi cp311 \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
  --only-binary=:all: --no-binary=sdnotify -r "$requirements"
