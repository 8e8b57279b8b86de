"""The targets: ratios of numbers measured in the same run, and whether each holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from pidaemon.bench.common import PI_FPS


@dataclass
class Target:
    name: str
    measured: str  # what the ratio compares
    ratio: float | None  # None: not measured (e.g. LiteRT missing)
    limit: float
    at_most: bool  # True: ratio <= limit passes; False: ratio >= limit passes
    passed: bool | None = field(init=False)

    def __post_init__(self) -> None:
        if self.ratio is None:
            self.passed = None
        else:
            self.passed = self.ratio <= self.limit if self.at_most else self.ratio >= self.limit


def find_row(rows: list[dict], **match: object) -> dict:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def evaluate(report: dict) -> list[Target]:
    """pi-infer's performance targets, each as a ratio of two numbers from this run."""
    runs = report["scenarios"]
    auto = report["auto_engine"]
    targets = []

    ratio = None
    if report["litert"]:
        peer = report["litert"]["rows"]
        ratio = _ratio(find_row(peer, engine="litert", caller="main, in turn")["p50_ms"],
                       find_row(peer, engine=auto, caller="main, in turn")["p50_ms"])
    targets.append(Target(
        "model-vs-litert", f"{auto} model-only fps / LiteRT fps, 1 thread, timed in turn (p50)",
        ratio, 1.8, False))

    threads = report["daemon_threads"]
    throughput = [r for r in runs if r["scenario"] == "throughput" and r["runner"] == "pi-infer"]
    daemon = find_row(throughput, threads=threads)
    targets.append(Target(
        "throughput", f"pi-infer fps / what it could reach: the model-only fps (timed in the "
        f"same process before and after) or the camera's, whichever is lower; {auto}, "
        f"{threads} thread(s) (what inference.threads: auto picks here)",
        _ratio(daemon["fps"], min(daemon["model_fps"], daemon["camera_fps"])), 0.95, False))
    targets.append(Target(
        "auto-threads", f"pi-infer fps at auto's {threads} thread(s) / the best of "
        f"{', '.join(str(r['threads']) for r in throughput)} threads",
        _ratio(daemon["fps"], max(r["fps"] for r in throughput)), 0.95, False))
    for name in ("pi-like", "pi-like-auto"):
        run = next(r for r in runs if r["scenario"] == name and r["runner"] == "pi-infer")
        targets.append(Target(
            f"{name}-latency", f"pi-infer latency p50 / model-only p50, {run['engine']}, "
            f"{run['threads']} thread(s), both at {PI_FPS:g} fps",
            _ratio(run["latency_p50_ms"], run["model_p50_ms"]), 1.2, True))
    run = find_row(runs, scenario="pi-like-auto", runner="pi-infer")
    targets.append(Target(
        "pipeline-cpu", f"pi-infer CPU / the model's own CPU for the same frames, {auto}, "
        f"{PI_FPS:g} fps (capture, queues and outputs cost at most 15%)",
        _ratio(run["cpu_cores"], run["model_cpu_cores"]), 1.15, True))

    pipeline = find_row(runs, scenario="overload", runner="pi-infer", threads=threads)
    for default in (True, False):
        match = {"default_threads": True} if default else {"threads": threads,
                                                            "default_threads": False}
        tutorial = find_row(runs, scenario="overload", runner="tutorial", **match)
        what = "each at its default" if default else f"both at {threads} thread(s)"
        targets.append(Target(
            "overload-age" + ("" if default else "-same-threads"),
            f"tutorial frame age p95 / pi-infer frame age p95, qnnpack, {what} "
            f"({tutorial['threads']} vs {pipeline['threads']}), camera at "
            f"{pipeline['camera_fps']:g} fps",
            _ratio(tutorial["age_p95_ms"], pipeline["age_p95_ms"]), 3.0, False))

    targets += _xnnpack_targets(report, threads)

    warm = report["startup"]["warm"]
    bare = report["startup"]["bare"]
    targets.append(Target(
        "warm-start", "seconds to READY with the cache warm minus seconds of a bare "
        "`python -c 'import torch, cv2'` in the same run (limit in s)",
        round(warm["ready_s"] - bare["process_s"], 3), 0.5, True))
    targets.append(Target("warm-start-no-torchvision", "torchvision loaded at steady state "
                          "(0 = no)", float(warm["torchvision_loaded"]), 0.0, True))
    extra = warm["peak_rss_mb"] - bare["peak_rss_mb"]
    targets.append(Target("peak-rss", "MB of peak RSS above a bare `import torch, cv2` "
                          "(limit in MB)", round(extra, 1), 60.0, True))
    return targets


def _xnnpack_targets(report: dict, threads: int) -> list[Target]:
    """The xnnpack engine (when measured): its speed against qnnpack and LiteRT, timed in turn,
    and its pipeline against qnnpack's at the same model time (the GIL it holds in a process
    would starve the capture thread; run in a child, it must not show)."""
    runs = report["scenarios"]
    if not any(r["engine"] == "xnnpack" for r in runs):
        return []
    targets = []
    # Timed in turn beside LiteRT when it is installed, else each alone.
    peer = report["litert"]["rows"] if report["litert"] else report["model_only"]
    match = {"caller": "main, in turn"} if report["litert"] else {"caller": "main", "threads": 1}
    xnnpack = find_row(peer, engine="xnnpack", **match)["p50_ms"]
    for other, limit in (("qnnpack", 1.5), ("litert", 1.0)):
        ratio = (_ratio(find_row(peer, engine=other, **match)["p50_ms"], xnnpack)
                 if other != "litert" or report["litert"] else None)
        targets.append(Target(
            f"xnnpack-vs-{other}", f"xnnpack model-only fps / {other} fps, 1 thread, "
            f"{match['caller']} (p50)", ratio, limit, False))
    # What each should take: latency, the model time; frame age under overload, the model time
    # plus up to one camera period (the newest frame waits for the model to be free).
    for scenario, metric, what, bound in (
            ("pi-like", "latency_p50_ms", "latency p50 / model p50", _model),
            ("overload", "age_p95_ms", "frame age p95 / (model p50 + camera period)",
             _model_and_period)):
        ours = find_row(runs, scenario=f"{scenario}-xnnpack", runner="pi-infer")
        theirs = find_row(runs, scenario=scenario, runner="pi-infer", threads=threads)
        targets.append(Target(
            f"xnnpack-{scenario}-{metric.split('_')[0]}",
            f"({what}) with xnnpack over the same with qnnpack, {scenario}, {threads} thread(s)",
            _ratio(ours[metric] / bound(ours), theirs[metric] / bound(theirs)), 1.1, True))
    return targets


def _model(run: dict) -> float:
    return run["model_p50_ms"]


def _model_and_period(run: dict) -> float:
    return run["model_p50_ms"] + 1000 / run["camera_fps"]


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3)


