"""What the live page costs: the daemon's CPU at 36 fps with the page off, on with nobody
watching, and with one and three viewers of /stream.mjpg.

The very Pipeline and LiveSink the service runs, fed a simulated 640x480 camera (the size a Pi
camera is usually asked for, so the JPEG encoding costs what it would). Viewers read the stream
from a separate process, so only the daemon's side is counted. Each variant runs in a fresh
process, twice in mirrored order (off, idle, 1, 3, 3, 1, idle, off) so a drift in the machine's
load falls on every variant alike.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2

from pidaemon.bench.common import PI_FPS, WARMUP_S, Job
from pidaemon.bench.timing import isolated

SIZE = (640, 480)
VARIANTS: list[int | None] = [None, 0, 1, 3]  # None: web.enabled false; else viewers
VIEWER = """
import socket, sys, threading, time
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
def view():
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /stream.mjpg HTTP/1.1\\r\\nHost: bench\\r\\n\\r\\n")
        end = time.monotonic() + seconds
        while time.monotonic() < end and sock.recv(65536):
            pass
threads = [threading.Thread(target=view) for _ in range(count)]
for t in threads: t.start()
for t in threads: t.join()
"""


def _frames(photos: tuple[str, ...]) -> list:
    frames = [cv2.resize(image, SIZE, interpolation=cv2.INTER_AREA)
              for image in (cv2.imread(p) for p in photos) if image is not None]
    if not frames:
        import numpy as np

        frames = [np.random.default_rng(0).integers(0, 256, (SIZE[1], SIZE[0], 3), np.uint8)]
    return frames


PAGE_THREADS = ("web-frames", "http")  # the page's encoder and the server that sends


def _threads_cpu(names: tuple[str, ...]) -> float:
    """CPU seconds the named threads of this process have used, from /proc."""
    total = 0
    for thread in threading.enumerate():
        if thread.name in names and thread.native_id is not None:
            try:
                fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
            except OSError:
                continue
            utime, stime = fields.rsplit(")", 1)[1].split()[11:13]
            total += int(utime) + int(stime)
    return total / os.sysconf("SC_CLK_TCK")


def page_cost(job: Job, viewers: int | None) -> dict:
    """One variant: the daemon process's CPU cores over `job.seconds`, and the frames encoded."""
    from pidaemon.bench.simcamera import SimulatedCamera
    from pidaemon.model.classifier import load_classifier
    from pidaemon.outputs.live import LiveSink
    from pidaemon.pipeline import Pipeline
    from pidaemon.pipeline.sink import Sink
    from pidaemon.pipeline.snapshot import Snapshot
    from pidaemon.pipeline.tap import FrameTap

    cfg = dataclasses.replace(
        job.config, inference=dataclasses.replace(job.config.inference, engine="qnnpack",
                                                  threads=1),
        web=dataclasses.replace(job.config.web, enabled=viewers is not None,
                                listen="127.0.0.1:0", max_clients=max(3, viewers or 0)))
    classifier = load_classifier(cfg.model, cfg.inference)
    camera = SimulatedCamera(_frames(job.photos), PI_FPS)

    class View:  # what the service offers an output
        tap = FrameTap()
        pipeline: Pipeline | None = None

        def snapshot(self) -> Snapshot | None:
            return self.pipeline.snapshot() if self.pipeline else None

        def healthy(self) -> bool:
            return True

    view = View()
    sinks: list[Sink] = []
    page = LiveSink(cfg, view) if viewers is not None else None
    if page is not None:
        sinks.append(page)
    pipeline = view.pipeline = Pipeline(classifier, cfg, camera, sinks, tap=view.tap)
    for sink in sinks:
        sink.start()
    pipeline.start()
    client = None
    try:
        if page is not None and viewers:
            client = subprocess.Popen([sys.executable, "-c", VIEWER, str(page.port),
                                       str(viewers), str(WARMUP_S + job.seconds + 1)])
        time.sleep(WARMUP_S)
        wall, cpu = time.monotonic(), time.process_time()
        page_cpu = _threads_cpu(PAGE_THREADS)
        processed = pipeline.inference.processed
        encoded = page.frames.encoded if page else 0
        time.sleep(job.seconds)
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        page_cpu = _threads_cpu(PAGE_THREADS) - page_cpu
        processed = pipeline.inference.processed - processed
        encoded = (page.frames.encoded if page else 0) - encoded
    finally:
        pipeline.stop()
        for sink in sinks:
            sink.stop()
        if client is not None:
            client.wait(10)
    pipeline.raise_if_dead()
    return {"page": "off" if viewers is None else "on", "viewers": viewers or 0,
            "cpu_cores": cpu / wall, "page_cores": page_cpu / wall, "fps": processed / wall,
            "encoded_fps": encoded / wall, "cpu_ms_per_frame": cpu * 1000 / max(1, processed)}


def page_costs(job: Job, progress: Callable[[str], None]) -> dict:
    """Every variant, twice in mirrored order; CPU relative to the page switched off."""
    runs: dict[int | None, list[dict]] = {v: [] for v in VARIANTS}
    for variant in [*VARIANTS, *reversed(VARIANTS)]:
        progress(f"live page: {'off' if variant is None else f'on, {variant} viewers'}")
        runs[variant].append(isolated(page_cost, job, variant))
    off = statistics.mean(r["cpu_cores"] for r in runs[None])
    off_ms = statistics.mean(r["cpu_ms_per_frame"] for r in runs[None])
    rows = []
    for results in runs.values():
        cpu = statistics.mean(r["cpu_cores"] for r in results)
        rows.append({**results[0], "cpu_cores": round(cpu, 3),
                     "cpu_runs": [round(r["cpu_cores"], 3) for r in results],
                     "fps": round(statistics.mean(r["fps"] for r in results), 1),
                     "encoded_fps": round(statistics.mean(r["encoded_fps"] for r in results), 1),
                     "page_cores": round(statistics.mean(r["page_cores"] for r in results), 4),
                     "cpu_ms_per_frame": round(statistics.mean(r["cpu_ms_per_frame"]
                                                               for r in results), 2),
                     "cpu_vs_off": round(cpu / off, 3),
                     "ms_per_frame_vs_off": round(statistics.mean(
                         r["cpu_ms_per_frame"] for r in results) / off_ms, 3)})
    return {"camera": f"{SIZE[0]}x{SIZE[1]} at {PI_FPS:g} fps", "max_fps": job.config.web.max_fps,
            "rows": rows}


def render_page(page: dict) -> list[str]:
    lines = [f"live page (camera {page['camera']}, qnnpack 1 thread, web.max_fps "
             f"{page['max_fps']:g}; cpu: the whole process and page: its encoder and HTTP "
             f"threads, in cores; ms/frame: process CPU per classified frame)",
             f"  {'page':<6}{'viewers':>8}{'fps':>7}{'encoded/s':>10}{'cpu':>7}{'vs off':>8}"
             f"{'page':>8}{'ms/frame':>10}{'vs off':>8}  cpu of each run"]
    for r in page["rows"]:
        lines.append(f"  {r['page']:<6}{r['viewers']:>8}{r['fps']:>7.1f}{r['encoded_fps']:>10.1f}"
                     f"{r['cpu_cores']:>7.3f}{r['cpu_vs_off']:>8.3f}{r['page_cores']:>8.4f}"
                     f"{r['cpu_ms_per_frame']:>10.2f}{r['ms_per_frame_vs_off']:>8.3f}  "
                     f"{', '.join(f'{c:.3f}' for c in r['cpu_runs'])}")
    return lines
