#!/bin/bash
# Build the guest's dependency venv at OUT from Debian's python3.11, the interpreter the guest
# has at the same path. Venvs are not relocatable, so OUT is the path the guest mounts it at.
#
# Usage: build.sh OUT     (OUT must not exist)
set -euo pipefail

out=$1
here=$(cd "$(dirname "$0")" && pwd)
/usr/bin/python3.11 -m venv "$out"
"$out/bin/pip" install --quiet --progress-bar off -r "$here/requirements.txt"
"$out/bin/python" -c 'import cv2, numpy, sdnotify, torch, yaml; print("venv: torch", torch.__version__, "cv2", cv2.__version__)'
du -sh "$out"
