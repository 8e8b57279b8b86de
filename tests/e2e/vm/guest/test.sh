#!/bin/bash
# The user's proof, run as root inside the VM: install pi-infer, start it with systemctl on the
# vivid camera, and check what systemctl and journalctl show through reload, unplug, replug and
# stop. /e2e is the host's staging directory (see run.sh); /e2e/env names the dependency venv.
# No pipefail: the greps below stop reading at their first match.
set -eu
# shellcheck source=/dev/null
. /e2e/env

unit=pi-infer
venv=/opt/pi-infer/venv
vivid=(vivid n_devs=1 node_types=0x1)

up() { cut -d' ' -f1 /proc/uptime; }
phase_start=$(up)
phase() {
  local now
  now=$(up)
  awk -v a="$phase_start" -v b="$now" -v what="$*" \
    'BEGIN { printf "guest: %-44s %6.1fs  (uptime %6.1fs)\n", what, b - a, b }'
  phase_start=$now
}
ok() { echo "  ok: $*"; }
fail() {
  echo "  FAIL: $*"
  systemctl status "$unit" --no-pager || true
  exit 1
}
# Usage: wait_for SECONDS COMMAND...; polls COMMAND until it succeeds or SECONDS pass.
wait_for() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}
show() { systemctl show -P "$1" "$unit"; }
seconds() { systemd-analyze timespan "$1" | awk '$1 ~ /^(μs|us):$/ { print $2 / 1e6 }'; }
# The unit's journal messages, from line $1 on (default: all).
messages() { journalctl -u "$unit" -o cat --no-pager | tail -n "+${1:-1}"; }
count() { journalctl -u "$unit" -o cat --no-pager | wc -l; }
has() { messages "${2:-1}" | grep -qE "$1"; }
# Line number of the first message matching $1 from line $2 on.
line_of() { messages "$2" | grep -n -m1 -E "$1" | awk -F: -v from="$2" '{ print $1 + from - 1 }'; }
positive_fps() { messages | awk -F'fps=' '/^stats: / && $2 + 0 > 0 { found = 1 } END { exit !found }'; }
# Number of entries ("label (index) score") in prediction lines from line $1 on.
prediction_sizes() { messages "$1" | awk -F' [|] ' '/^prediction seq=/ { print NF }'; }

echo "guest: kernel $(uname -r), PID 1 $(cat /proc/1/comm), $(nproc) CPUs"
# The unit's journal for the host to show when anything fails: followed as it grows (for a
# hang that gets the VM killed), then written whole when the test ends.
journal=/e2e/out/journal.log
journalctl -u "$unit" -f -o short-monotonic --no-pager > "$journal" &
follower=$!
trap 'kill "$follower"; journalctl -u "$unit" -o short-monotonic --no-pager > "$journal"' EXIT

# ---- install the way `make install` does: venv under /opt/pi-infer, unit, config, model cache.
# The venv holds pi-infer itself; torch and the other dependencies come from the read-only
# venv shared by the host, found through a .pth file.
python3 -m venv --without-pip "$venv"
echo "$DEPS_VENV/lib/python3.11/site-packages" > "$venv/lib/python3.11/site-packages/deps.pth"
"$venv/bin/python" -m pip install --quiet --no-deps --no-index /e2e/wheel/*.whl
cp -r /e2e/root/. /
cp -r /e2e/model-cache /var/cache/pi-infer
systemctl daemon-reload
ok "$(basename /e2e/wheel/*.whl) in $venv; unit and config from make install-files"
! "$venv/bin/python" -c 'import torchvision' 2> /dev/null || fail "torchvision is importable in the guest"
ok "no torchvision in the guest venv: the daemon can only run from the compiled cache"
phase "install pi-infer"

modprobe "${vivid[@]}"
udevadm settle
[ -c /dev/video0 ] || fail "/dev/video0 did not appear"
ok "/dev/video0: $(v4l2-ctl -d /dev/video0 --info | awk -F': ' '/Card type/ { print $2 }')"
phase "modprobe vivid"

# ---- 1. start returns after READY; the camera line shows what the driver granted.
# Enabled, as installed for real; this also keeps systemd from unloading the stopped unit, so
# its exit status can be read after the stop.
systemctl enable --quiet "$unit"
systemctl start "$unit" || fail "systemctl start $unit failed"
phase "systemctl start (returns after READY=1)"
# A Type=notify unit leaves "activating" only on READY=1.
[ "$(show Type)/$(systemctl is-active "$unit")" = notify/active ] || fail "not active after start"
ok "is-active: active; status: $(show StatusText)"
pid=$(show MainPID)
restarts=$(show NRestarts)
has '^model: compiled cache /var/cache/pi-infer/' ||
  fail "the model did not come from the compiled cache in /var/cache/pi-infer"
ok "$(messages | grep -m1 '^model: ')"
owner=$(stat -c %U "$(readlink -f /var/cache/pi-infer)"/*.pt | sort -u)
[ "$owner" = "$(ps -o user= -p "$pid")" ] || fail "model cache owned by $owner, not the service user"
ok "systemd moved the cache to $(readlink -f /var/cache/pi-infer), owned by the DynamicUser $owner"
wait_for 30 has '^camera: opened /dev/video0 \(V4L2\): ' || fail "no camera line"
camera=$(messages | grep -m1 '^camera: opened /dev/video0')
ok "$camera"
fmt=$(v4l2-ctl -d /dev/video0 --get-fmt-video)
width=$(awk -F'[:/ ]+' '/Width\/Height/ { print $3 }' <<< "$fmt")
height=$(awk -F'[:/ ]+' '/Width\/Height/ { print $4 }' <<< "$fmt")
fourcc=$(awk -F"'" '/Pixel Format/ { print $2 }' <<< "$fmt")
fps=$(v4l2-ctl -d /dev/video0 --get-parm | awk '/Frames per second/ { printf "%.1f", $4 }')
granted="${width}x${height} $fourcc at $fps fps"
[[ $camera == *": $granted (asked "* ]] || fail "camera line does not show the driver's $granted"
ok "matches the driver: $granted"

# ---- 2. stats with fps > 0, predictions with labels, structured journal fields.
wait_for 90 positive_fps || fail "no stats line with fps > 0"
stats=$(messages | awk -F'fps=' '/^stats: / && $2 + 0 > 0' | tail -n 1)
ok "$stats"
wait_for 60 has '^prediction seq=[0-9]+ latency_ms=[0-9.]+: [^|]+ \([0-9]+\) [0-9.]+' ||
  fail "no prediction line with labels"
ok "$(messages | grep '^prediction seq=' | tail -n 1)"
label=$(sed -n 's/^stats: .* top1=\(.*\) score=.*/\1/p' <<< "$stats")
[ -n "$(journalctl -u "$unit" -o cat PI_INFER_LABEL="$label")" ] ||
  fail "journalctl -u $unit PI_INFER_LABEL='$label' found nothing"
ok "journalctl -u $unit PI_INFER_LABEL='$label' finds the stats entries"
journalctl -u "$unit" -o json PI_INFER_EVENT=stats | python3 -c '
import json, sys
fps = [float(json.loads(line)["PI_INFER_FPS"]) for line in sys.stdin]
assert fps and max(fps) > 0, fps
print(f"  ok: -o json: {len(fps)} stats entries with PI_INFER_FPS, up to {max(fps)}")
' || fail "journalctl -o json has no PI_INFER_FPS > 0"
phase "predictions in the journal"

# ---- 3. reload: a new top_k shows in the next prediction lines, same process.
[ "$(prediction_sizes 1 | sort -u)" = 5 ] || fail "prediction lines do not have the default 5 entries"
mark=$(($(count) + 1))
sed -i 's/^\( *top_k:\).*/\1 2/' /etc/pi-infer.yaml
systemctl reload "$unit" || fail "systemctl reload failed"
wait_for 30 has '^reload: configuration applied' "$mark" || fail "reload not applied"
after=$(line_of '^reload: ' "$mark")
ok "$(messages "$after" | head -n 1)"
# A frame already in inference when the reload lands still reports the old top_k.
two='^prediction seq=[^|]* [|] [^|]*$'
wait_for 60 has "$two" "$after" || fail "no prediction with top_k 2 after the reload"
first=$(line_of "$two" "$after")
ok "$(messages "$first" | head -n 1)"
wait_for 60 has '^prediction seq=' "$((first + 1))" || fail "predictions stopped after the reload"
[ "$(prediction_sizes "$first" | sort -u)" = 2 ] || fail "prediction lines went back to the old top_k"
ok "all later predictions have 2 entries ($(prediction_sizes "$after" | grep -vc '^2$') in flight at the reload had 5)"
[ "$(show MainPID)" = "$pid" ] || fail "reload restarted the process"
phase "systemctl reload (top_k 5 -> 2)"

# ---- 4. unplug and replug the camera: lost, retried, recovered, never restarted.
# The kernel refuses to remove a driver whose device is open, as for any V4L2 camera.
echo "  rmmod vivid while streaming: $(rmmod vivid 2>&1 && echo removed)"
# So unplug the way a USB disconnect does: the driver lets go of the device, the node vanishes.
mark=$(($(count) + 1))
echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind
unplugged=$(date +%s)
wait_for 30 has '^camera: lost /dev/video0: .*retrying' "$mark" || fail "no 'camera: lost ... retrying' line"
ok "$(messages "$mark" | grep -m1 '^camera: lost')"
# Once the daemon has closed the dead device, the driver can be removed.
wait_for 30 rmmod vivid || fail "rmmod vivid still refused: pi-infer keeps the lost device open"
ok "rmmod vivid succeeded: pi-infer closed the lost device"
# Stay unplugged for longer than the watchdog interval.
watchdog=$(seconds "$(show WatchdogUSec)")
sleep "$(awk -v w="$watchdog" -v t="$(($(date +%s) - unplugged))" 'BEGIN { print (w > t ? w - t + 5 : 5) }')"
[ "$(systemctl is-active "$unit")" = active ] || fail "not active with the camera unplugged"
[ "$(show MainPID)/$(show NRestarts)" = "$pid/$restarts" ] || fail "restarted while unplugged"
! has 'Watchdog timeout' || fail "watchdog timeout while the camera was unplugged"
ok "active after $(($(date +%s) - unplugged)) s unplugged (watchdog ${watchdog} s), same PID, NRestarts $restarts"
phase "unplug (unbind, rmmod vivid)"
mark=$(($(count) + 1))
modprobe "${vivid[@]}"
wait_for 60 has '^camera: recovered /dev/video0' "$mark" || fail "no 'camera: recovered' line"
ok "$(messages "$mark" | grep -m1 '^camera: recovered')"
recovered=$(line_of '^camera: recovered' "$mark")
wait_for 60 has '^prediction seq=' "$recovered" || fail "no prediction after the camera came back"
ok "$(messages "$recovered" | grep -m1 '^prediction seq=')"
[ "$(show MainPID)/$(show NRestarts)" = "$pid/$restarts" ] || fail "the service was restarted"
ok "same PID $pid, NRestarts $restarts"
phase "replug (modprobe vivid) and recover"

# ---- 5. stop: a clean exit within the unit's stop timeout.
stop_timeout=$(seconds "$(show TimeoutStopUSec)")
started=$(date +%s.%N)
systemctl stop "$unit" || fail "systemctl stop failed"
took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
state=$(systemctl is-active "$unit" || true)
[ "$state" = inactive ] || fail "$state after stop"
exit_status="Result=$(show Result) ExecMainCode=$(show ExecMainCode) ExecMainStatus=$(show ExecMainStatus)"
[ "$exit_status" = "Result=success ExecMainCode=1 ExecMainStatus=0" ] || fail "unclean exit: $exit_status"
awk -v t="$took" -v m="$stop_timeout" 'BEGIN { exit !(t < m) }' || fail "stop took $took s (timeout $stop_timeout s)"
ok "inactive, $exit_status (1 = exited), stopped in $took s (TimeoutStopSec ${stop_timeout} s)"
phase "systemctl stop"
echo "guest: PASS"
