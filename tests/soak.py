"""`make soak`: run the daemon for minutes and check it neither leaks nor loses threads.

Phase "steady": a looping video file at 36 fps. Phase "flaky": a network camera at 36 fps that
is unplugged for 5 s every 30 s. RSS and thread count are sampled every 10 s; the run fails if
RSS grows more than 5 MB after the first minute, the thread count changes (compared among
samples with the camera in the same state: FFmpeg keeps a thread per open stream), or anything
is logged at error level. The compiled-model cache is built first, so both phases measure the
steady state.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from tests.conftest import LABELS, PHOTO_ORDER, WEIGHTS, Daemon, pi_infer, write_video
from tests.mjpeg_camera import MjpegCamera

SAMPLE_EVERY = 10.0
RSS_GROWTH_LIMIT_KB = 5 * 1024


def proc_status(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "Threads"):
                values[key] = int(rest.split()[0])
    return values


def write_soak_config(workdir: Path) -> Path:
    config = workdir / "soak.yaml"
    config.write_text(yaml.safe_dump({
        "camera": {"fps": 36, "loop": True, "stall_timeout": 2.0},
        "model": {"weights": str(WEIGHTS), "labels": str(LABELS),
                  "cache_dir": str(workdir / "cache")},
        "inference": {"threads": 1},
        "output": {"interval": 1.0}}))
    return config


def camera_state(daemon: Daemon) -> str:
    states = [e["state"] for e in daemon.of("camera")]
    return "streaming" if not states or states[-1] in ("opened", "recovered") else states[-1]


def soak(name: str, source: str, minutes: float, config: Path,
         background: threading.Thread | None = None) -> dict:
    daemon = Daemon(["--config", str(config), "--source", source])
    daemon.wait_for(lambda e: e["event"] == "lifecycle" and e["message"].startswith("ready"),
                    timeout=120)
    if background is not None:
        background.start()
    started = time.monotonic()
    samples = []
    while (elapsed := time.monotonic() - started) < minutes * 60:
        time.sleep(SAMPLE_EVERY)
        daemon.drain()
        status = proc_status(daemon.proc.pid)
        samples.append({"t": round(elapsed + SAMPLE_EVERY), "rss_kb": status["VmRSS"],
                        "threads": status["Threads"], "camera": camera_state(daemon)})
        print(f"[{name}] {samples[-1]}", flush=True)
    daemon.signal(signal.SIGTERM)
    code = daemon.finish(timeout=10)
    after_first_minute = [s for s in samples if s["t"] > 60] or samples
    base = after_first_minute[0]["rss_kb"]
    stats = daemon.of("stats")
    return {
        "phase": name, "minutes": minutes, "exit_code": code,
        "rss_first_minute_kb": base, "rss_end_kb": samples[-1]["rss_kb"],
        "rss_max_kb": max(s["rss_kb"] for s in samples),
        "rss_growth_kb": max(s["rss_kb"] for s in after_first_minute) - base,
        "threads": {state: sorted({s["threads"] for s in samples if s["camera"] == state})
                    for state in {s["camera"] for s in samples}},
        "errors": [e["message"] for e in daemon.events if e.get("level") == "error"],
        "camera_lost": sum(e.get("state") == "lost" for e in daemon.of("camera")),
        "camera_recovered": sum(e.get("state") == "recovered" for e in daemon.of("camera")),
        "processed": stats[-1]["processed"] if stats else 0,
        "dropped": stats[-1]["dropped"] if stats else 0,
    }


def flap(camera: MjpegCamera, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        while not stop.wait(25):
            camera.unplug()
            if stop.wait(5):
                break
            camera.plug_in()
    return threading.Thread(target=run, daemon=True)


def verdict(result: dict) -> list[str]:
    problems = []
    if result["exit_code"] != 0:
        problems.append(f"exit code {result['exit_code']}")
    if result["rss_growth_kb"] > RSS_GROWTH_LIMIT_KB:
        problems.append(f"RSS grew {result['rss_growth_kb']} kB after the first minute")
    if any(len(counts) != 1 for counts in result["threads"].values()):
        problems.append(f"thread count varied: {result['threads']}")
    if result["errors"]:
        problems.append(f"errors logged: {result['errors'][:3]}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="per phase")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pi-infer-soak-") as tmp:
        workdir = Path(tmp)
        video = write_video(workdir / "photos.avi", PHOTO_ORDER, 1.0, fps=36)
        config = write_soak_config(workdir)
        prepared = pi_infer("prepare", "--config", str(config))
        if prepared.returncode != 0:
            print(prepared.stderr, file=sys.stderr)
            return 1
        results = [soak("steady", str(video), args.minutes, config)]
        camera = MjpegCamera(fps=36)
        camera.plug_in()
        stop = threading.Event()
        try:
            results.append(soak("flaky", camera.url, args.minutes, config, flap(camera, stop)))
        finally:
            stop.set()
            camera.unplug()
    failed = False
    for result in results:
        problems = verdict(result)
        failed |= bool(problems)
        print(json.dumps(result))
        print(f"[{result['phase']}] {'FAIL: ' + '; '.join(problems) if problems else 'PASS'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
