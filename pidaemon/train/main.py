"""`pi-infer train DATASET --output DIR`: read, augment, extract features, fit, check, write.

The held-out images are set aside before augmentation (no view of them is trained on) and
scored on the daemon's own preprocessing. The model written is the model scored: if it falls
below --min-accuracy nothing is written and the message names the labels it confuses.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pidaemon import config as config_module
from pidaemon.train.args import check_arguments
from pidaemon.train.augment import views
from pidaemon.train.dataset import Dataset, Example, load_dataset, split
from pidaemon.train.errors import NotAccurateEnough
from pidaemon.train.output import LABELS, MODEL, REPORT, check_output, write_output
from pidaemon.train.progress import Progress

SHOWN_UNREADABLE = 5


def run_train(args: argparse.Namespace) -> int:
    check_arguments(args)
    started = time.monotonic()
    cfg = config_module.load(args.config)
    dataset = load_dataset(args.dataset)
    check_output(args.output)
    _say_unreadable(dataset)
    train, held_out = split(dataset, args.seed)

    from pidaemon.train import model as model_module  # torch is imported only from here

    backbone, engine = model_module.load_backbone(cfg)
    targets = [e.label for e in train for _ in range(args.augment)]
    total = len(targets) + len(held_out)
    progress = Progress("features", total)
    features_started = time.monotonic()
    try:
        features = model_module.extract(backbone, _views(train, held_out, args.augment,
                                                         random.Random(args.seed)),
                                        progress.advance)
    finally:
        progress.close()
    features_s = time.monotonic() - features_started
    train_features, held_features = features[:len(targets)], features[len(targets):]

    import torch

    head_started = time.monotonic()
    head = model_module.train_head(train_features, torch.tensor(targets), len(dataset.labels),
                                   args.hidden, args.seed)
    head_s = time.monotonic() - head_started
    predicted = model_module.predict(head, held_features)
    truth = [e.label for e in held_out]
    matrix = confusion(truth, predicted, len(dataset.labels))
    accuracy = sum(matrix[i][i] for i in range(len(matrix))) / len(truth)
    if accuracy < args.min_accuracy:
        raise NotAccurateEnough(
            f"held-out accuracy {accuracy:.2f} is below --min-accuracy {args.min_accuracy:g}; "
            f"it {confused_text(matrix, dataset.labels)}; nothing written to {args.output}: add "
            f"more varied examples of those labels (or lower --min-accuracy)")
    report = {
        "labels": dataset.labels,
        "images": dataset.count(),
        "train_images": dataset.count(train),
        "held_out_images": dataset.count(held_out),
        "unreadable": [str(p) for p in dataset.unreadable],
        "views_per_image": args.augment,
        "head": "linear" if args.hidden == 0 else f"hidden layer of {args.hidden}",
        "held_out_accuracy": round(accuracy, 4),
        "confusion_matrix": {"rows": "true label", "columns": "predicted label",
                             "labels": dataset.labels, "counts": matrix},
        "training_seconds": {"features": round(features_s, 2), "head": round(head_s, 2),
                             "total": round(time.monotonic() - started, 2)},
        "engine": engine, "machine": platform.machine(), "torch": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_output(args.output, model_module.export(backbone, head), dataset.labels, report)
    _say_done(args.output.resolve(), report, total, cfg.model.weights)
    return 0


def _views(train: list[Example], held_out: list[Example], count: int,
           rng: random.Random) -> Iterator[np.ndarray]:
    """`count` views of each training example, then the daemon's view of each held-out one."""
    for example in train:
        yield from views(example.image, count, rng)
    for example in held_out:
        yield views(example.image, 1, rng)[0]


def confusion(truth: list[int], predicted: list[int], classes: int) -> list[list[int]]:
    """counts[true][predicted]."""
    matrix = [[0] * classes for _ in range(classes)]
    for t, p in zip(truth, predicted, strict=True):
        matrix[t][p] += 1
    return matrix


def confused_text(matrix: list[list[int]], labels: list[str]) -> str:
    """'confuses cat with dog (2 of 3 cat images), ...', worst first."""
    pairs = sorted(((matrix[t][p], t, p) for t in range(len(labels)) for p in range(len(labels))
                    if t != p and matrix[t][p]), reverse=True)
    parts = [f"{labels[t]} with {labels[p]} ({n} of {sum(matrix[t])} {labels[t]} images)"
             for n, t, p in pairs]
    return "confuses " + ", ".join(parts) if parts else "confuses nothing"


def _say_unreadable(dataset: Dataset) -> None:
    if not dataset.unreadable:
        return
    shown = ", ".join(str(p) for p in dataset.unreadable[:SHOWN_UNREADABLE])
    more = len(dataset.unreadable) - SHOWN_UNREADABLE
    print(f"skipped {len(dataset.unreadable)} unreadable file(s): {shown}"
          f"{f' and {more} more (listed in report.json)' if more > 0 else ''}", flush=True)


def _say_done(output: Path, report: dict[str, Any], views_total: int,
              weights: str | None) -> None:
    counts = ", ".join(f"{label} {n}" for label, n in report["images"].items())
    seconds = report["training_seconds"]
    print(f"trained {len(report['labels'])} labels ({counts}) from {views_total} views in "
          f"{seconds['total']:.1f} s; held-out accuracy {report['held_out_accuracy']:.2f}")
    print(f"wrote {output / MODEL}, {output / LABELS}, {output / REPORT}")
    print("use it: in /etc/pi-infer.yaml (then systemctl reload pi-infer)")
    print("model:")
    print(f"  torchscript: {output / MODEL}")
    print(f"  labels: {output / LABELS}")
    if weights is not None:  # the config check refuses both; train needs them, the daemon not
        print(f"  weights: null  # torchscript replaces it (train again with --config naming "
              f"{weights})")
