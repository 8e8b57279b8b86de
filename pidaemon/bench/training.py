"""How long `pi-infer train` takes here: 4 labels x 30 images made from the photos at hand.

The dataset is what a user would collect: each label's images are different crops of its photo,
some flipped, lighter or darker. Training runs as the user runs it, in a process of its own.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from pidaemon.config import Config

LABELS = 4
IMAGES = 30  # per label
QUICK_IMAGES = 6


def variation(image: np.ndarray, rng: random.Random) -> np.ndarray:
    """A crop of 60-95 % of the photo somewhere in it, maybe flipped, lighter or darker."""
    height, width = image.shape[:2]
    scale = rng.uniform(0.6, 0.95)
    h, w = int(height * scale), int(width * scale)
    top, left = rng.randint(0, height - h), rng.randint(0, width - w)
    out = image[top:top + h, left:left + w]
    if rng.random() < 0.5:
        out = cv2.flip(out, 1)
    return cv2.convertScaleAbs(out, alpha=rng.uniform(0.6, 1.4), beta=rng.uniform(-20, 20))


def make_dataset(root: Path, labels: dict[str, list[str]], per_label: int, seed: int) -> Path:
    """`root/<label>/` with `per_label` variations of the label's photos (paths) in turn."""
    rng = random.Random(seed)
    for label, photos in labels.items():
        folder = root / label
        folder.mkdir(parents=True)
        images = [cv2.imread(photo) for photo in photos]
        for i in range(per_label):
            image = variation(images[i % len(images)], rng)
            cv2.imwrite(str(folder / f"{label}-{i:02d}.jpg"), image)
    return root


def training_time(cfg: Config, photos: tuple[str, ...], work: Path, quick: bool) -> dict | None:
    """Train on the first LABELS photos; None without enough photos to make the labels."""
    if len(photos) < LABELS:
        return None
    labels = {Path(p).stem: [p] for p in photos[:LABELS]}
    per_label = QUICK_IMAGES if quick else IMAGES
    dataset = make_dataset(work / "train-dataset", labels, per_label, seed=1)
    config = work / "train.yaml"
    config.write_text(yaml.safe_dump({"model": {"weights": cfg.model.weights},
                                      "inference": {"threads": cfg.inference.threads}}))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pidaemon", "train", str(dataset), "--output",
                             str(work / "trained"), "--config", str(config)],
                            capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-500:]}
    report = json.loads((work / "trained" / "report.json").read_text())
    return {"labels": LABELS, "images_per_label": per_label, "wall_s": round(wall, 2),
            "seconds": report["training_seconds"],
            "held_out_accuracy": report["held_out_accuracy"]}
