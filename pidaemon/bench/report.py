"""The table `pi-infer bench` prints, and the conditions it was measured under."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from pathlib import Path

import cv2

from pidaemon.bench.page import render_page


def conditions(quick: bool, seconds: float, load_before: tuple[float, ...]) -> dict:
    return {"machine": platform.machine(), "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(), "python": platform.python_version(),
            "torch": metadata.version("torch"), "opencv": cv2.__version__,
            "quick": quick, "scenario_seconds": seconds, "nice": os.nice(0),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    names = [line.split(":", 1)[1].strip() for line in text.splitlines()
             if line.startswith(("model name", "Model"))]
    return names[0] if names else platform.processor()


def training_line(training: dict | None) -> str:
    if training is None:
        return "training: no photos to make a dataset from"
    if "error" in training:
        return f"training: failed: {training['error']}"
    s = training["seconds"]
    return (f"pi-infer train, {training['labels']} labels x {training['images_per_label']} "
            f"images: {training['wall_s']:.1f} s (features {s['features']:.1f} s, head "
            f"{s['head']:.1f} s), held-out accuracy {training['held_out_accuracy']:.2f}")


# -- the table --------------------------------------------------------------------------------
def render(report: dict) -> str:
    c = report["conditions"]
    lines = [f"pi-infer bench: {c['machine']} ({c['cpu_model']}), {c['cpus']} CPUs, torch "
             f"{c['torch']}, {c['scenario_seconds']:g} s per scenario, nice {c['nice']}, load "
             f"average {c['loadavg_before'][0]:.2f} -> {c['loadavg_after'][0]:.2f}", "",
             f"{'model only (int8 MobileNetV2, 224x224)':<40}{'thr':>3}  {'called from':<17}"
             f"{'p50 ms':>7}{'fps':>8}{'cpu':>6}"]
    rows = list(report["model_only"])
    if report["litert"]:
        version = report["litert"]["version"]
        rows += [{**r, "engine": f"LiteRT {version}" if r["engine"] == "litert" else r["engine"]}
                 for r in report["litert"]["rows"]]
    for r in rows:
        lines.append(f"  {r['engine']:<38}{r['threads']:>3}  {r['caller']:<17}"
                     f"{r['p50_ms']:>7.2f}{r['fps']:>8.1f}{r['cpu_cores']:>6.2f}")
    costs = report["frame_costs_ms"]
    lines.append("  per frame besides the model: " + ", ".join(
        f"{k.removesuffix('_ms').replace('_', ' ')} {v:.3f} ms" for k, v in costs.items()))
    lines += ["", f"{'scenario':<19}{'runner':<9}{'engine':<8}{'thr':>3}{'camera':>7}{'fps':>7}"
              f"{'model':>7}{'infer':>7}{'lat p50':>8}{'p95':>7}{'age p50':>8}{'p95':>7}"
              f"{'cpu':>6}{'dropped':>8}"]
    for r in report["scenarios"]:
        model = f"{r['model_p50_ms']:.1f}" if "model_p50_ms" in r else "-"
        threads = f"{r['threads']}{'*' if r.get('default_threads') else ''}"
        lines.append(f"{r['scenario']:<19}{r['runner']:<9}{r['engine']:<8}{threads:>3}"
                     f"{r['camera_fps']:>7.0f}{r['fps']:>7.1f}{model:>7}{r['infer_p50_ms']:>7.1f}"
                     f"{r['latency_p50_ms']:>8.1f}{r['latency_p95_ms']:>7.1f}"
                     f"{r['age_p50_ms']:>8.1f}{r['age_p95_ms']:>7.1f}{r['cpu_cores']:>6.2f}"
                     f"{r['dropped']:>8}")
    s = report["startup"]
    lines += ["", "(ms. model: model-only p50 at the camera's rate, timed in the same process "
              "before and after; infer: the inference step per frame; lat: camera read to "
              "result; age: sensor capture to result. cpu: process CPU time / wall time; "
              "thr *: torch's default thread count)", "",
              f"start-up to READY: cold {s['cold']['ready_s']:.2f} s, warm "
              f"{s['warm']['ready_s']:.2f} s (torchvision "
              f"{'loaded' if s['warm']['torchvision_loaded'] else 'not loaded'} when warm); "
              f"bare `import torch, cv2` {s['bare']['import_s']:.2f} s",
              f"peak RSS: warm daemon {s['warm']['peak_rss_mb']:.0f} MB, cold "
              f"{s['cold']['peak_rss_mb']:.0f} MB, bare import {s['bare']['peak_rss_mb']:.0f} MB"]
    if "xnnpack" in s:
        x = s["xnnpack"]
        lines.append(f"xnnpack: READY cold (export) {x['cold']['ready_s']:.2f} s, warm "
                     f"{x['warm']['ready_s']:.2f} s; peak RSS warm {x['warm']['peak_rss_mb']:.0f} "
                     f"MB + its child {x['warm']['children_peak_rss_mb']:.0f} MB")
    lines.append("")
    if report.get("page"):
        lines += [*render_page(report["page"]), ""]
    lines += [training_line(report.get("training")), "", "targets"]
    for t in report["targets"]:
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[t["passed"]]
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
        sign = "<=" if t["at_most"] else ">="
        lines.append(f"  {t['name']:<26}{ratio:>8} {sign} {t['limit']:<5g} {verdict:<5} "
                     f"{t['measured']}")
    return "\n".join(lines)
