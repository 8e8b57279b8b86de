"""What regions cost: a frame cut into 1, 2 and 4 regions against the whole frame.

`python -m pidaemon.bench.regions` times, in one process and in turn, what each frame costs the
capture thread (crop, resize, normalise) and the inference thread (the model): the whole frame
as today, N regions in one batched call, and 4 regions in 4 separate calls for comparison.
Ratios are to the whole frame, so they carry over to other machines better than milliseconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
from pathlib import Path

import cv2

from pidaemon import config as config_module
from pidaemon.bench.common import require_shared
from pidaemon.bench.timing import time_calls

BOXES = {1: [(0.0, 0.0, 0.5, 1.0)],
         2: [(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)],
         4: [(0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5), (0.0, 0.5, 0.5, 1.0),
             (0.5, 0.5, 1.0, 1.0)]}
FRAME = (640, 480)


def measure(seconds: float, shared: Path, cache_dir: Path) -> list[dict]:
    import torch

    from pidaemon.model.classifier import load_classifier
    from pidaemon.model.preprocess import Normalizer, crop_and_resize, crop_box

    cfg = config_module.Config()
    model = dataclasses.replace(
        cfg.model, weights=str(shared / "models/mobilenet_v2_qnnpack_reconstructed.pth"),
        labels=str(shared / "models/imagenet_classes.txt"), cache_dir=str(cache_dir))
    classifier = load_classifier(model, cfg.inference)
    torch.set_num_threads(1)
    frame = cv2.resize(cv2.imread(str(shared / "images/coffee.png")), FRAME)
    normalize = Normalizer()
    cases = {"whole frame": (lambda: normalize(crop_and_resize(frame)), 1)}
    for n, boxes in BOXES.items():
        cases[f"{n} region{'s' if n > 1 else ''}, 1 call"] = (
            lambda boxes=boxes: normalize.many([crop_box(frame, b) for b in boxes]), 1)
    cases["4 regions, 4 calls"] = (
        lambda: normalize.many([crop_box(frame, b) for b in BOXES[4]]), 4)
    rows = []
    for name, (prepare, calls) in cases.items():
        batch = prepare()
        parts = [batch] if calls == 1 else list(batch.split(1))
        capture = time_calls(prepare, seconds)
        model_time = time_calls(lambda parts=parts: [classifier.top_k_batch(p, 5)
                                                     for p in parts], seconds)
        rows.append({"case": name, "capture_ms": capture.p50_ms, "model_ms": model_time.p50_ms})
    base = rows[0]["capture_ms"] + rows[0]["model_ms"]
    for row in rows:
        row["ratio"] = (row["capture_ms"] + row["model_ms"]) / base
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--shared", type=Path, help="the test weights and photos")
    args = parser.parse_args(argv)
    shared = require_shared(args.shared, "regions")
    if shared is None:
        return 2
    with tempfile.TemporaryDirectory() as cache:
        rows = measure(args.seconds, shared, Path(cache))
    print(f"# regions of a {FRAME[0]}x{FRAME[1]} frame, 1 torch thread, {platform.machine()}, "
          f"{platform.processor() or platform.machine()}")
    print(f"{'case':<22} {'capture ms':>10} {'model ms':>9} {'total x':>8}")
    for row in rows:
        print(f"{row['case']:<22} {row['capture_ms']:>10.2f} {row['model_ms']:>9.2f} "
              f"{row['ratio']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
