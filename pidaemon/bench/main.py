"""`pi-infer bench`: pi-infer measured against the tutorial loop, LiteRT and its own targets.

One invocation measures everything side by side, so the targets are ratios taken on the same
machine in the same minutes: model-only latency (the limit), the tutorial's single loop and
pi-infer's threads fed by the same simulated V4L2 camera, LiteRT, time to READY and peak memory.
Each measurement runs in a fresh process, as the daemon and the tutorial script do: the quantized
engine is process-wide and OpenMP thread teams stay with the thread that started them, state that
one run would otherwise leave to the next (docs/performance.md shows how much it matters).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pidaemon import config as config_module
from pidaemon.bench.common import (
    LITERT_FILE,
    PHOTO_SUFFIXES,
    Job,
    bench_config,
    camera_frames,
    duration,
    shared_dir,
)
from pidaemon.bench.model_only import model_only, versus_litert
from pidaemon.bench.page import page_costs, render_page
from pidaemon.bench.report import conditions, render
from pidaemon.bench.scenarios import run_scenario, scenarios
from pidaemon.bench.startup import startup
from pidaemon.bench.targets import evaluate, find_row
from pidaemon.bench.timing import isolated
from pidaemon.bench.training import training_time
from pidaemon.config import Config
from pidaemon.cpus import resolve_threads
from pidaemon.errors import ConfigError
from pidaemon.model.xnnpack.loader import xnnpack_installed


def measure(job: Job, cfg: Config, litert_model: Path | None, quick: bool,
            progress: Callable[[str], None]) -> dict:
    work = Path(job.work)
    steady = duration("steady", quick)
    installed = xnnpack_installed()
    progress("start-up: cold, then warm (spawning pi-infer run)")
    report: dict[str, Any] = {"startup": startup(
        cfg, camera_frames(job.photos), work, steady,
        (cfg.inference.engine, "xnnpack") if installed else (cfg.inference.engine,))}
    # Later processes reuse the cache the cold start filled (and add the qnnpack entry).
    model_job = dataclasses.replace(job, seconds=duration("model", quick))
    progress("model only")
    callers = ("main", "worker") if quick else ("main", "worker", "worker+main team")
    threads, _ = resolve_threads(cfg.inference.threads)
    thread_counts = tuple(sorted({1, 2, threads}))
    model_rows: list[dict] = []
    # xnnpack (ExecuTorch) where it is installed; its first load exports the program.
    engines = ("auto", "qnnpack", "xnnpack") if installed else ("auto", "qnnpack")
    for engine in engines:
        for caller in callers if engine != "xnnpack" else ("main", "worker"):
            result = isolated(model_only, model_job, engine, thread_counts, caller)
            model_rows += result["rows"]
            report.setdefault("frame_costs_ms", result["costs"])
    report["model_only"] = model_rows
    report["auto_engine"] = model_rows[0]["engine"]
    report["litert"] = None
    if litert_model is not None:
        progress("LiteRT")
        peers = tuple(dict.fromkeys(("auto", "qnnpack", *engines[2:])))
        report["litert"] = isolated(versus_litert, model_job, str(litert_model), peers)
    auto = find_row(model_rows, engine=report["auto_engine"], threads=1, caller="main")
    qnnpack = find_row(model_rows, engine="qnnpack", threads=1, caller="main")
    xnnpack = (find_row(model_rows, engine="xnnpack", threads=1, caller="main")
               if "xnnpack" in engines else None)
    runs = []
    report["daemon_threads"] = threads
    for scenario in scenarios(auto["fps"], qnnpack["fps"], threads,
                              xnnpack["fps"] if xnnpack else None):
        progress(f"{scenario.name}: {scenario.runner}")
        runs.append(isolated(run_scenario, job, scenario))
    report["scenarios"] = runs
    report["page"] = page_costs(job, progress)
    progress("training: pi-infer train")
    report["training"] = training_time(cfg, job.photos, work, quick)
    return report


def run_bench(args: argparse.Namespace) -> int:
    """`pi-infer bench`: measure, print the table, optionally write JSON. Exit 0 once measured,
    whatever the targets say (a noisy machine must not fail a build)."""
    quick = bool(args.quick)
    base = config_module.load(args.config)
    shared = shared_dir(args.shared)
    seconds = args.seconds or duration("scenario", quick)
    if seconds <= 0:
        raise ConfigError("--seconds must be positive")
    images = shared / "images" if shared else None
    photos = tuple(sorted(str(p) for p in images.iterdir() if p.suffix.lower() in
                          PHOTO_SUFFIXES)) if images and images.is_dir() else ()
    litert_model = shared / LITERT_FILE if shared and (shared / LITERT_FILE).is_file() else None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pi-infer-bench-") as tmp:
        work = Path(tmp)
        cfg = bench_config(base, shared, work / "daemon-cache")
        job = Job(cfg, photos, seconds, tmp)
        def progress(what: str) -> None:
            print(f"bench: {what}", file=sys.stderr, flush=True)

        if args.page:
            report = {"page": page_costs(job, progress)}
        else:
            report = measure(job, cfg, litert_model, quick, progress)
    report["conditions"] = conditions(quick, seconds, load_before)
    if args.page:
        c = report["conditions"]
        print("\n".join([f"pi-infer bench --page: {c['machine']} ({c['cpu_model']}), "
                         f"{c['cpus']} CPUs, {seconds:g} s per run, load average "
                         f"{c['loadavg_before'][0]:.2f} -> {c['loadavg_after'][0]:.2f}",
                         *render_page(report["page"])]))
    else:
        report["targets"] = [asdict(t) for t in evaluate(report)]
        print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


