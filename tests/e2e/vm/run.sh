#!/bin/bash
# make e2e-vm: boot a Debian 12 VM under QEMU (a real Debian kernel, systemd as PID 1, journald,
# the kernel's vivid driver as /dev/video0), install pi-infer in it the way `make install` does,
# and run guest/test.sh there as root. Must run as root.
#
# The image and the guest's dependency venv are cached in /var/cache/pi-infer-e2e.
# Env: PYTHON (development venv python, builds the model cache and the wheel), SHARED (the
# project's shared/ directory, default <repo>/../shared), MEM (MiB, default 3072), SMP
# (default 2), TIMEOUT (seconds for the whole VM run, default 600), PREPARE=1 (only build the cached
# image and guest venv, as .ci/run does in the background while the tests run).
set -euo pipefail
shopt -s inherit_errexit

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
python=${PYTHON:-python3}
shared=$(cd "${SHARED:-$repo/../shared}" && pwd)
cache=/var/cache/pi-infer-e2e
mem=${MEM:-3072}
smp=${SMP:-2}
timeout=${TIMEOUT:-600}

t0=$(date +%s.%N)
phase_start=$t0
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
# One timing line per phase: time since the previous phase ended, and since the start.
phase() {
  printf 'e2e-vm: %-44s %6ss  (total %6ss)\n' "$*" "$(elapsed "$phase_start")" "$(elapsed "$t0")"
  phase_start=$(date +%s.%N)
}
die() { echo "e2e-vm: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mkfs)"
"$repo/packaging/ensure-system-packages" e2e-vm

# The image and the guest venv are cached under $cache, keyed by a hash of the files that define
# them, so a change to those files builds anew; older builds are pruned once a new one is done.
key() { cat "$@" | sha256sum | cut -c1-12; }
# Usage: cached NAME KEY BUILD_SCRIPT; prints the directory, building it first when needed.
cached() {
  local dir=$cache/$1-$2 old
  if [ ! -e "$dir/.complete" ]; then
    rm -rf "${dir:?}"
    "$3" "$dir" >&2
    touch "$dir/.complete"
    for old in "$cache/$1"-*; do
      [ "$old" = "$dir" ] || rm -rf "${old:?}"
    done
  fi
  echo "$dir"
}

mkdir -p "$cache"
exec 9> "$cache/lock"
flock 9
image=$(cached image "$(key "$here"/image/*)" "$here/image/build.sh")
phase "image $image"
venv=$(cached venv "$(key "$here"/venv/*)" "$here/venv/build.sh")
phase "guest venv $venv"
[ "${PREPARE:-0}" = 1 ] && { echo "e2e-vm: caches ready (PREPARE=1: no VM run)"; exit 0; }

work=$(mktemp -d /var/tmp/pi-infer-e2e-vm.XXXXXX)
payload=$work/payload
mkdir -p "$payload/root"

# Unit and config exactly as `make install` places them, then the edits a user makes.
make -C "$repo" --no-print-directory install-files DESTDIR="$payload/root" > /dev/null
# The models are shared into the guest at a fixed path, out of reach of the unit's PrivateTmp
# and ProtectHome wherever the clone is; the cache is keyed by the weights' content.
models=/usr/local/share/pi-infer/models
"$python" "$here/guest_config.py" "$payload/root/etc/pi-infer.yaml" "$models" \
  "$work/prepare.yaml" "$shared/models" "$payload/model-cache"
# The compiled model cache, built on the host by pi-infer itself with the guest's config.
(cd "$repo" && TORCH_HOME=$work/torch "$python" -m pidaemon prepare --config "$work/prepare.yaml") \
  > "$work/prepare.log" 2>&1 || { cat "$work/prepare.log"; die "pi-infer prepare failed"; }
phase "model cache (pi-infer prepare)"

# pi-infer itself as a wheel, built from a copy of the work tree so the clone stays clean.
mkdir -p "$work/src"
git -C "$repo" ls-files -z --cached --others --exclude-standard |
  (cd "$repo" && xargs -0 tar -c --no-recursion --ignore-failed-read -f -) | tar -x -C "$work/src"
"$python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$payload/wheel" "$work/src" \
  > "$work/wheel.log" 2>&1 || { cat "$work/wheel.log"; die "building the pi-infer wheel failed"; }
phase "pi-infer wheel"

cp "$here/guest/test.sh" "$payload/test.sh"
echo "DEPS_VENV=$venv" > "$payload/env"
# Read-only shares: the venv at its own path (venvs are not relocatable), and the models.
shares=(-virtfs "local,path=$payload,mount_tag=e2e,security_model=none")
printf '%s\n' "venv $venv" "models $models" > "$payload/shares"
for share in "venv $venv" "models $shared/models"; do
  shares+=(-virtfs "local,path=${share#* },mount_tag=${share%% *},security_model=none,readonly=on")
done

console=$work/console.log
mkdir -p "$payload/out"
qrc=0
timeout "$timeout" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -machine pc \
  -smp "$smp" -m "$mem" -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 panic=-1 loglevel=4 systemd.show_status=error tsc=reliable" \
  -drive "file=$image/rootfs.ext4,format=raw,if=virtio,snapshot=on" \
  "${shares[@]}" -nic none -display none -monitor none -serial "file:$console" -no-reboot \
  < /dev/null > "$work/qemu.log" 2>&1 || qrc=$?
[ -f "$payload/out/test.log" ] && cat "$payload/out/test.log"
rc=$(cat "$payload/out/rc" 2> /dev/null || echo none)
phase "VM boot, test, power-off (qemu exit $qrc)"

if [ "$qrc" = 0 ] && [ "$rc" = 0 ]; then
  rm -rf "${work:?}"
  echo "e2e-vm: PASS"
  exit 0
fi
echo "e2e-vm: guest journalctl -u pi-infer:"
cat "$payload/out/journal.log" 2> /dev/null || true
echo "e2e-vm: serial console (last 60 lines):"
tail -n 60 "$console"
cat "$work/qemu.log"
echo "e2e-vm: FAIL (guest test exit $rc, qemu exit $qrc); files kept in $work"
exit 1
