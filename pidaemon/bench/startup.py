"""Start-up and memory: the real daemon started on a video, timed to READY, RSS read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from pidaemon.bench.common import PI_FPS, READY_TIMEOUT_S
from pidaemon.bench.notify_listener import NotifyListener
from pidaemon.config import Config
from pidaemon.model.preprocess import INPUT_SIZE


# -- start-up and memory ----------------------------------------------------------------------
def write_video(path: Path, frames: list[np.ndarray], fps: float, seconds: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps,
                             (INPUT_SIZE, INPUT_SIZE))
    for i in range(round(fps * seconds)):
        writer.write(frames[i * len(frames) // round(fps * seconds)])
    writer.release()
    return path


def daemon_config(cfg: Config, cache_dir: Path, video: Path, engine: str) -> dict:
    model = cfg.model
    return {
        "camera": {"device": str(video), "fps": PI_FPS, "loop": True},
        "inference": {"engine": engine, "threads": cfg.inference.threads},
        "model": {"weights": model.weights, "torchscript": model.torchscript,
                  "labels": model.labels, "cache_dir": str(cache_dir)},
    }


def proc_status(pid: int, key: str) -> float:
    """A /proc/PID/status value in MB (VmHWM: peak resident memory)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def start_daemon(config_path: Path, work: Path, steady_s: float) -> dict:
    """`pi-infer run` to READY=1 (on a NOTIFY_SOCKET of our own), then steady-state memory."""
    notify = NotifyListener(work / "notify.sock")
    log_path = work / "daemon.log"
    log = log_path.open("w")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pidaemon", "run", "--config",
                             str(config_path), "--log-format", "json"],
                            env=notify.env(dict(os.environ)), stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def exited() -> str | None:
        if proc.poll() is None:
            return None
        tail = log_path.read_text(errors="replace").splitlines()[-5:]
        return f"pi-infer run exited with {proc.returncode}: " + " / ".join(tail)

    try:
        ready_s = notify.wait_for("READY=1", READY_TIMEOUT_S, exited) - started
        time.sleep(steady_s)
        peak = proc_status(proc.pid, "VmHWM")
        children = [int(pid) for task in Path(f"/proc/{proc.pid}/task").iterdir()
                    for pid in (task / "children").read_text().split()]
        children_peak = sum(proc_status(pid, "VmHWM") for pid in children)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        notify.close()
    return {"ready_s": round(ready_s, 3), "peak_rss_mb": round(peak, 1),
            "children_peak_rss_mb": round(children_peak, 1),
            "torchvision_loaded": "/torchvision/" in maps, "exit_code": proc.returncode}


def bare_import() -> dict:
    """A process that only imports torch and cv2: the floor for start-up time and memory."""
    code = ("import time; t = time.monotonic(); import torch, cv2; "
            "print(time.monotonic() - t); print(open('/proc/self/status').read())")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    total = time.monotonic() - started
    lines = out.splitlines()
    peak = next(int(x.split()[1]) for x in lines if x.startswith("VmHWM:")) / 1024
    return {"import_s": round(float(lines[0]), 3), "process_s": round(total, 3),
            "peak_rss_mb": round(peak, 1)}


def startup(cfg: Config, frames: list[np.ndarray], work: Path, steady_s: float,
            engines: tuple[str, ...]) -> dict:
    """For each engine, a cold start (empty cache: build or export) and a warm one."""
    video = write_video(work / "camera.avi", frames, PI_FPS, 2.0)
    cache_dir = work / "daemon-cache"  # empty: the first start is cold
    report: dict = {"bare": bare_import()}
    for engine in engines:
        config_path = work / f"daemon-{engine}.yaml"
        config_path.write_text(yaml.safe_dump(daemon_config(cfg, cache_dir, video, engine)))
        cold = start_daemon(config_path, work, steady_s)
        warm = start_daemon(config_path, work, steady_s)
        if engine == cfg.inference.engine:
            report.update(cold=cold, warm=warm)
        else:
            report[engine] = {"cold": cold, "warm": warm}
    return report


