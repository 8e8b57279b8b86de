"""pi-infer under a real systemd: do what a user does with systemctl and journalctl; check it.

Run by run.sh (`make e2e`) inside `unshare --mount --propagation private`. It installs the unit and
config with `make install-files`, pi-infer itself into a per-run layer over a cached venv, points
the camera at a video made from the shared photos, boots systemd in a container and then:
1. `systemctl start` returns only after READY; `is-active` and `status` show the service running;
2. the journal shows fps and the photos' labels, and structured fields can be queried;
3. `systemctl reload` applies a new top_k live; a broken config is logged and the old one kept;
4. a hung inference thread (a user's model that never returns): systemd logs a watchdog timeout
   and restarts;
5. `systemctl stop` ends cleanly within seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from container import Canaries, Container, ContainerError, booted

UNIT = "pi-infer"
SRV = "/srv/pi-infer-e2e"  # the per-run files, bound read-only into the container
VENV = "/opt/pi-infer/venv"
CONFIG = "/etc/pi-infer.yaml"
VIDEO_FPS = 10  # each photo is shown for one second; camera.fps paces the file at this rate
FRAME_SIDE = 512
# Photo -> top-1 of the quantized MobileNetV2 (shared/models/SOURCES.md), except TOP5_ONLY.
PHOTOS = {
    "coffee.png": "espresso",
    "grace_hopper.jpg": "military uniform",
    "cat_720p.jpg": "Egyptian cat",
    "bird.bmp": "chickadee",
}
# Classes that win only narrowly in camera frames, so that another CPU's kernels may rank them
# second (tests/labels.py): they must be among a frame's top 5, the others top-1.
TOP5_ONLY = {"military uniform"}
PREDICTION = re.compile(r"^prediction seq=\d+ .*?: (.*)$")


class ProofFailed(AssertionError):
    """What a user would have seen go wrong."""


class Timings(dict[str, float]):
    """Seconds per phase, printed as each phase ends."""

    def record(self, name: str, since: float) -> None:
        self[name] = time.monotonic() - since
        print(f"phase {name}: {self[name]:.1f} s", flush=True)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        since = time.monotonic()
        try:
            yield
        finally:
            self.record(name, since)


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll until `probe` returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ProofFailed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def write_video(path: Path, images: Path) -> None:
    """One second per photo; frames are the photos' centre squares, as a camera pointed at each."""
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*"MJPG"), VIDEO_FPS, (FRAME_SIDE, FRAME_SIDE)
    )
    if not writer.isOpened():
        raise ProofFailed(f"OpenCV cannot write {path}")
    for name in PHOTOS:
        image = cv2.imread(str(images / name), cv2.IMREAD_COLOR)
        if image is None:
            raise ProofFailed(f"cannot read {images / name}")
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        frame = cv2.resize(image[top : top + side, left : left + side], (FRAME_SIDE, FRAME_SIDE))
        for _ in range(VIDEO_FPS):
            writer.write(np.ascontiguousarray(frame))
    writer.release()


def stage(repo: Path, shared: Path, venv: Path, run: Path) -> Path:
    """Prepare the per-run files on the host; return the directory bound at SRV."""
    share = run / "share"
    (share / "models").mkdir(parents=True)  # mount point for shared/models
    make = ["make", "-s", "-C", str(repo), "install-files"]
    subprocess.run([*make, f"DESTDIR={share / 'stage'}"], check=True)
    # Build the wheel from a copy: pip builds in the source tree, and the clone stays untouched.
    files = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    src = run / "src"
    for rel in filter(None, files):
        if (repo / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, src / rel)
    wheel = [str(venv / "bin/pip"), "wheel", "--quiet", "--no-deps", "-w", str(share / "dist")]
    built = subprocess.run([*wheel, str(src)], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise ProofFailed(f"pip wheel failed:\n{built.stdout}{built.stderr}")
    write_video(share / "camera.avi", shared / "images")
    sys.path.insert(0, str(repo))
    from tests.hanging_model import write_hanging_model

    write_hanging_model(share / "hang.pt")
    return share


def edited_config(installed: str, top_k: int, hang: bool = False) -> str:
    """The installed /etc/pi-infer.yaml as a user edits it for this camera and the local model
    (`hang`: a TorchScript model of theirs that never returns on a camera frame)."""
    config = yaml.safe_load(installed) or {}
    config.setdefault("camera", {}).update(device=f"{SRV}/camera.avi", fps=VIDEO_FPS, loop=True)
    config.setdefault("model", {}).update(
        weights=f"{SRV}/models/mobilenet_v2_qnnpack_reconstructed.pth",
        labels=f"{SRV}/models/imagenet_classes.txt",
        top_k=top_k,
    )
    if hang:
        config["model"].update(weights=None, torchscript=f"{SRV}/hang.pt")
    config.setdefault("output", {})["every_frame"] = True
    return yaml.safe_dump(config, sort_keys=False)


class Proof:
    """The user's steps, each asserting on systemctl and journalctl output."""

    def __init__(self, box: Container, installed_config: str) -> None:
        self.box = box
        self.installed_config = installed_config

    def configure(self, top_k: int, hang: bool = False) -> None:
        self.box.write(CONFIG, edited_config(self.installed_config, top_k, hang))

    def show(self, *props: str) -> dict[str, str]:
        out = self.box.out("systemctl", "show", UNIT, *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def restarts(self) -> int:
        return int(self.show("NRestarts")["NRestarts"])

    def is_active(self) -> str:
        return self.box.run("systemctl", "is-active", UNIT, check=False).stdout.strip()

    def journal(self, *args: str) -> str:
        return self.box.out("journalctl", "--no-pager", "-u", UNIT, *args)

    def entries(self, *args: str) -> list[dict[str, Any]]:
        """The unit's journal entries with all their fields, as `journalctl -o json` gives them."""
        out = self.journal("-o", "json", *args)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def cursor(self) -> str:
        out = self.box.out("journalctl", "--no-pager", "-n", "0", "--show-cursor")
        return out.strip().rsplit("-- cursor: ", 1)[-1]

    def predictions(self, after: str = "") -> list[list[str]]:
        """The labels of each prediction line in the unit's journal, after a cursor if given."""
        rows = []
        text = self.journal("-o", "cat", *(("--after-cursor", after) if after else ()))
        for line in text.splitlines():
            match = PREDICTION.match(line)
            if match:
                rows.append([part.split(" (")[0].strip() for part in match.group(1).split(" | ")])
        return rows

    def start(self) -> None:
        """Step 1: start blocks until READY; the service is active and shows its STATUS."""
        self.configure(top_k=5)
        started = time.monotonic()
        self.box.run("systemctl", "start", UNIT, timeout=360)
        took = time.monotonic() - started
        exec_at, ready_at = "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic"
        props = self.show("Type", "ActiveState", exec_at, ready_at)
        to_ready = (int(props[ready_at]) - int(props[exec_at])) / 1e6
        print(f"  systemctl start returned after {took:.1f} s; exec to READY {to_ready:.1f} s")
        if props["Type"] != "notify" or props["ActiveState"] != "active":
            raise ProofFailed(f"after start: {props}")
        # Loading torch and the model takes seconds: a unit active sooner did not wait for READY.
        if to_ready < 0.5 or took < to_ready:
            raise ProofFailed(f"start did not wait for READY ({took:.1f} s, {to_ready:.1f} s)")
        # The daemon's lines and systemd's go through one journal socket, in order.
        lines = self.journal("-o", "cat").splitlines()
        opened = next((i for i, x in enumerate(lines) if x.startswith("camera: opened")), None)
        ready = next((i for i, x in enumerate(lines) if x.startswith(f"Started {UNIT}")), None)
        if opened is None or ready is None or opened > ready:
            raise ProofFailed(f"the camera was not open when the unit became active: {lines}")
        if self.is_active() != "active":
            raise ProofFailed(f"systemctl is-active says {self.is_active()!r}")

        def status_line() -> str | None:
            out = self.box.out("systemctl", "status", "--no-pager", "--lines=0", UNIT)
            fps = re.search(r'^ *Status: "([\d.]+) fps.*$', out, re.MULTILINE)
            return fps.group(0).strip() if fps and float(fps.group(1)) > 0 else None

        print(f"  {wait_for('a STATUS line with fps > 0 in systemctl status', status_line, 15)}")

    def journal_shows_results(self) -> None:
        """Step 2: stats with fps and every photo's label; PI_INFER_* fields are queryable."""

        def all_labels() -> set[str] | None:
            rows = self.predictions()
            seen = {row[0] for row in rows} | {label for row in rows for label in row
                                                if label in TOP5_ONLY}
            return seen if set(PHOTOS.values()) <= seen else None

        top1 = wait_for(f"predictions {sorted(PHOTOS.values())}", all_labels, 30)
        if not re.search(r"^stats: fps=\d", self.journal("-o", "cat"), re.MULTILINE):
            raise ProofFailed(f"no 'stats: fps=' line in journalctl -u {UNIT}")
        espresso = self.journal("PI_INFER_LABEL=espresso", "-o", "cat")
        if "espresso" not in espresso:
            raise ProofFailed(f"journalctl -u {UNIT} PI_INFER_LABEL=espresso found nothing")
        stats = [e for e in self.entries() if "PI_INFER_FPS" in e]
        if not stats or stats[-1].get("SYSLOG_IDENTIFIER") != "pi-infer":
            raise ProofFailed("no journal entry from pi-infer with a PI_INFER_FPS field in -o json")
        print(f"  top-1 labels seen: {sorted(top1)}; last PI_INFER_FPS={stats[-1]['PI_INFER_FPS']}")

    def reload(self) -> None:
        """Step 3: top_k 5 -> 2 applies live; a broken config is logged and the old one kept."""
        pid = self.show("MainPID")["MainPID"]
        cursor = self.cursor()
        self.configure(top_k=2)
        self.box.run("systemctl", "reload", UNIT)

        def two_labels() -> bool:
            rows = self.predictions(cursor)
            return bool(rows) and len(rows[-1]) == 2

        wait_for("prediction lines with top_k=2 after reload", two_labels, 20)
        cursor = self.cursor()
        self.configure(top_k=0)
        self.box.run("systemctl", "reload", UNIT)

        def error_logged() -> str | None:
            # Priority checked here: journalctl 252 finds nothing for -p err after a cursor.
            entries = self.entries("--after-cursor", cursor)
            errors = [e["MESSAGE"] for e in entries if int(e.get("PRIORITY", "6")) <= 3]
            return next((m for m in errors if "top_k" in m), None)

        logged = wait_for("an error naming top_k after a broken reload", error_logged, 20)
        print(f"  broken reload logged: {logged}")
        cursor = self.cursor()
        rows = wait_for("predictions after it", lambda: self.predictions(cursor), 10)
        after = self.show("ActiveState", "MainPID")
        if after != {"ActiveState": "active", "MainPID": pid}:
            raise ProofFailed(f"after the reloads: {after}; before: active, MainPID={pid}")
        if any(len(row) != 2 for row in rows):
            raise ProofFailed("the broken config replaced the running one (top_k is no longer 2)")
        self.configure(top_k=2)

    def watchdog(self) -> None:
        """Step 4: with the inference thread hung, systemd logs a watchdog timeout and restarts."""
        self.configure(top_k=2, hang=True)
        self.box.run("systemctl", "restart", UNIT, timeout=360)
        cursor = self.cursor()
        restarts = self.restarts()
        hung_at = time.monotonic()

        def timed_out() -> str | None:
            lines = self.journal("-o", "cat", "--after-cursor", cursor).splitlines()
            return next((line for line in lines if "Watchdog timeout" in line), None)

        # The daemon stops pinging once a heartbeat is older than the watchdog interval, and
        # systemd waits one more interval: up to twice WatchdogSec=30s.
        print(f"  {wait_for('systemd to log a watchdog timeout', timed_out, 120)}")
        fired = time.monotonic() - hung_at
        print(f"  watchdog fired {fired:.1f} s after the service started with the hang")
        wait_for("NRestarts to increase", lambda: self.restarts() > restarts, 60)
        wait_for("the restarted service to be active", lambda: self.is_active() == "active", 120)
        self.configure(top_k=2)
        self.box.run("systemctl", "restart", UNIT, timeout=360)

    def stop(self) -> None:
        """Step 5: stop returns within seconds and systemd records a clean exit."""
        cursor = self.cursor()
        started = time.monotonic()
        self.box.run("systemctl", "stop", UNIT, timeout=60)
        took = time.monotonic() - started
        # The stopped unit is unloaded, so `systemctl show` no longer has its exit status;
        # systemd's own journal lines about it do.
        said = [
            e["MESSAGE"]
            for e in self.entries("--after-cursor", cursor)
            if e.get("SYSLOG_IDENTIFIER") == "systemd"
        ]
        print(f"  systemctl stop took {took:.1f} s; systemd: {said}")
        unclean = [m for m in said if re.search(r"exited|Failed|timed out|Killing", m)]
        if unclean or f"{UNIT}.service: Deactivated successfully." not in said:
            raise ProofFailed(f"stop was not clean: {said}")
        if took > 10:
            raise ProofFailed(f"systemctl stop took {took:.1f} s")
        if self.is_active() != "inactive":
            raise ProofFailed(f"after stop, systemctl is-active says {self.is_active()!r}")


def prove(box: Container, share: Path, timings: Timings, passed: list[str]) -> None:
    with timings.phase("install"):
        box.run("cp", "-R", f"{SRV}/stage/.", "/")
        wheel = next((share / "dist").glob("*.whl")).name
        # `python -m pip`: the venv's own scripts name the cache path it was built at.
        pip = [f"{VENV}/bin/python", "-m", "pip"]
        box.run(*pip, "install", "-q", "--no-deps", "--no-index", f"{SRV}/dist/{wheel}")
        box.run(*pip, "check")
        box.run("systemctl", "daemon-reload")
        proof = Proof(box, box.out("cat", CONFIG))
    for name, step in [
        ("start", proof.start),
        ("journal", proof.journal_shows_results),
        ("reload", proof.reload),
        ("watchdog", proof.watchdog),
        ("stop", proof.stop),
    ]:
        with timings.phase(name):
            step()
        passed.append(name)


def run_proof(args: argparse.Namespace, timings: Timings, passed: list[str]) -> None:
    run = args.work / "run"
    shutil.rmtree(run, ignore_errors=True)
    with timings.phase("stage"):
        share = stage(args.repo, args.shared, args.venv, run)
    binds = [(share, SRV), (args.shared / "models", f"{SRV}/models")]
    overlays = [(args.venv, run / "venv-upper", VENV)]
    since = time.monotonic()
    with booted(args.work, "pi-infer-e2e", binds, overlays) as box:
        timings.record("boot", since)
        try:
            prove(box, share, timings, passed)
        except (ProofFailed, ContainerError, subprocess.TimeoutExpired):
            box.print_failure(UNIT)
            raise
        since = time.monotonic()
    timings.record("poweroff", since)
    shutil.rmtree(run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--shared", type=Path, required=True)
    parser.add_argument("--venv", type=Path, required=True, help="cached venv, overlaid at " + VENV)
    parser.add_argument(
        "--work", type=Path, required=True, help="this harness's own scratch directory"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    canaries = Canaries(
        [args.work / "canary", Path(f"/tmp/pi-infer-nspawn-canary-{args.work.name}")]
    )
    canaries.plant()
    timings = Timings()
    passed: list[str] = []
    failed = 0
    try:
        run_proof(args, timings, passed)
    except (
        ProofFailed,
        ContainerError,
        subprocess.CalledProcessError,
        subprocess.TimeoutExpired,
    ) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        failed = 1
    finally:
        canaries.check()  # raises past everything: the host was touched
        canaries.remove()
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(f"e2e: {len(passed)} passed, {failed} failed", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
