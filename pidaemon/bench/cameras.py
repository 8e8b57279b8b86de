"""What several cameras cost one daemon: throughput, latency and memory for 1, 2 and 4 cameras.

`python -m pidaemon.bench.cameras` runs the real Pipeline around 1, 2 and 4 simulated cameras
(bench.simcamera, 224x224 at 36 fps each, so 2 and 4 cameras overload one torch thread), for each
engine, with the frames of several cameras batched into one call and one call per frame, all in
one run so the ratios compare like with like. It also reports which way the daemon itself picks
(it measures both on the first frames, pipeline.batching), and the peak RSS of a process running
3 cameras against one running 1 (each in a fresh process: ru_maxrss only grows).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pidaemon import config as config_module
from pidaemon.bench.common import bench_config, camera_frames, percentile, require_shared
from pidaemon.bench.simcamera import SimulatedCamera

FPS = 36.0
WARMUP_S = 1.5
CAMERAS = (1, 2, 4)
ENGINES = ("x86", "qnnpack")


def _config(shared: Path, cache_dir: Path, engine: str, cameras: int) -> config_module.Config:
    import dataclasses

    from pidaemon.config.schema import NamedCamera

    base = bench_config(config_module.Config(), shared, cache_dir)
    camera = dataclasses.replace(base.camera, device="simulated")
    named = tuple(NamedCamera(f"cam{i}", dataclasses.replace(camera, device=f"sim{i}"))
                  for i in range(cameras))
    return dataclasses.replace(base, cameras=named, inference=dataclasses.replace(
        base.inference, engine=engine, threads=1))


def run(shared: Path, cache_dir: Path, engine: str, cameras: int, batch: bool | None,
        seconds: float) -> dict:
    """One pipeline for `seconds`: results per second and latency, all cameras together."""
    from pidaemon.model.classifier import load_classifier
    from pidaemon.pipeline import Pipeline, Result
    from pidaemon.pipeline.sink import Sink

    cfg = _config(shared, cache_dir, engine, cameras)
    classifier = load_classifier(cfg.model, cfg.inference)
    frames = camera_frames([str(shared / "images" / p) for p in
                            ("coffee.png", "bird.bmp", "chelsea.png")])
    results: list[Result] = []

    class Recorder(Sink):
        def on_result(self, result: Result, labels: list[str]) -> None:
            results.append(result)

    sources = {c.name: SimulatedCamera(frames, FPS) for c in cfg.cameras}
    pipeline = Pipeline(classifier, cfg, sources, [Recorder()])
    pipeline.settings.batch.forced = batch
    pipeline.start()
    try:
        time.sleep(WARMUP_S)
        start = len(results)
        began = time.monotonic()
        time.sleep(seconds)
        window = results[start:]
        elapsed = time.monotonic() - began
        rss = _current_rss_mb()
    finally:
        pipeline.stop()
    pipeline.raise_if_dead()
    latencies = [r.latency_ms for r in window] or [0.0]
    return {"engine": classifier.engine, "cameras": cameras,
            "batch": {None: "auto", True: "batched", False: "one by one"}[batch],
            "fps": round(len(window) / elapsed, 1), "rss_mb": rss,
            "latency_p50_ms": round(percentile(latencies, 0.5), 1),
            "latency_p95_ms": round(percentile(latencies, 0.95), 1),
            "chose": {None: "-", True: "batched", False: "one by one"}[
                pipeline.settings.batch.decided]}


def _current_rss_mb() -> float:
    """VmRSS now: the steady state, which the peak at model loading would hide."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def rss_mb(shared: Path, cache_dir: Path, cameras: int, seconds: float) -> tuple[float, float]:
    """Peak and running RSS of a fresh process running `cameras` cameras (auto engine)."""
    done = subprocess.run(
        [sys.executable, "-m", "pidaemon.bench.cameras", "--rss-child", str(cameras),
         "--seconds", str(seconds), "--shared", str(shared), "--cache", str(cache_dir)],
        capture_output=True, text=True, check=True)
    peak, running = done.stdout.strip().splitlines()[-1].split()
    return float(peak), float(running)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--shared", type=Path, help="the test weights and photos")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shared = require_shared(args.shared, "cameras")
    if shared is None:
        return 2
    if args.rss_child is not None:
        row = run(shared, args.cache, "auto", args.rss_child, None, args.seconds)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, row["rss_mb"])
        return 0
    import torch

    engines = [e for e in ENGINES if e in torch.backends.quantized.supported_engines]
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for engine in engines:
            for cameras in CAMERAS:
                ways = (False,) if cameras == 1 else (False, True, None)
                for batch in ways:
                    rows.append(run(shared, Path(cache), engine, cameras, batch, args.seconds))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        rss = {n: rss_mb(shared, Path(cache), n, args.seconds) for n in (1, 3)}
    print(f"# {len(CAMERAS)} camera counts at {FPS:g} fps each, 224x224, 1 torch thread, "
          f"{platform.machine()}, {platform.processor() or platform.machine()}")
    print(f"{'engine':<8} {'cameras':>7} {'way':<11} {'fps':>6} {'x 1 cam':>7} "
          f"{'p50 ms':>7} {'p95 ms':>7} {'auto chose':<11}")
    single = {r["engine"]: r["fps"] for r in rows if r["cameras"] == 1}
    for row in rows:
        ratio = row["fps"] / single[row["engine"]] if single[row["engine"]] else 0.0
        print(f"{row['engine']:<8} {row['cameras']:>7} {row['batch']:<11} {row['fps']:>6.1f} "
              f"{ratio:>7.2f} {row['latency_p50_ms']:>7.1f} {row['latency_p95_ms']:>7.1f} "
              f"{row['chose']:<11}")
    for i, what in enumerate(("peak RSS", "RSS while running")):
        one, three = rss[1][i], rss[3][i]
        print(f"{what}: 1 camera {one:.0f} MB, 3 cameras {three:.0f} MB "
              f"(+{three - one:.0f} MB; target +30 MB)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "rss_mb": rss}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
