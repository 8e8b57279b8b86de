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

    best = max((r for r in runs if r["scenario"] == "throughput" and r["runner"] == "pi-infer"),
               key=lambda r: r["fps"])
    targets.append(Target(
        "throughput", f"pi-infer fps / model-only fps, {auto}, {best['threads']} thread(s), "
        f"model timed back to back in the same process just before and after",
        _ratio(best["fps"], best["model_fps"]), 0.95, False))
    for name in ("pi-like", "pi-like-auto"):
        run = find_row(runs, scenario=name, runner="pi-infer")
        targets.append(Target(
            f"{name}-latency", f"pi-infer latency p50 / model-only p50, {run['engine']}, "
            f"1 thread, both at {PI_FPS:g} fps",
            _ratio(run["latency_p50_ms"], run["model_p50_ms"]), 1.2, True))
    run = find_row(runs, scenario="pi-like-auto", runner="pi-infer")
    targets.append(Target("pi-like-auto-cpu", f"CPU cores used at {PI_FPS:g} fps, {auto}",
                          run["cpu_cores"], 0.3, True))

    tutorial = find_row(runs, scenario="overload", runner="tutorial")
    pipeline = find_row(runs, scenario="overload", runner="pi-infer")
    targets.append(Target("overload-age", "tutorial frame age p95 / pi-infer frame age p95, "
                          f"qnnpack, camera at {pipeline['camera_fps']:g} fps",
                          _ratio(tutorial["age_p95_ms"], pipeline["age_p95_ms"]), 3.0, False))

    warm = report["startup"]["warm"]
    targets.append(Target("warm-start", "seconds to READY with the cache warm (limit in s)",
                          warm["ready_s"], 2.0, True))
    targets.append(Target("warm-start-no-torchvision", "torchvision loaded at steady state "
                          "(0 = no)", float(warm["torchvision_loaded"]), 0.0, True))
    extra = warm["peak_rss_mb"] - report["startup"]["bare"]["peak_rss_mb"]
    targets.append(Target("peak-rss", "MB of peak RSS above a bare `import torch, cv2` "
                          "(limit in MB)", round(extra, 1), 60.0, True))
    return targets


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3)


