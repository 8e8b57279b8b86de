"""The user's examples: one folder per label, read once, split into training and held-out images.

Every way a folder can be unusable becomes one DatasetError (or TrainUsageError for the path
itself) naming the folder and the fix. Files that are not readable images are listed and
skipped rather than failing the run, since a stray note or a half-copied photo is common.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pidaemon.train.errors import DatasetError, TrainUsageError

MIN_IMAGES = 5  # per label: at least one held out, four to learn from
HELD_OUT_FRACTION = 0.2
KEEP_SHORT_SIDE = 256  # shrunk on reading: 0.26 MB each, where a 12 MP photo holds 36 MB


@dataclass
class Example:
    path: Path
    image: np.ndarray  # BGR, short side at most KEEP_SHORT_SIDE
    label: int


@dataclass
class Dataset:
    root: Path
    labels: list[str]
    examples: list[Example]
    unreadable: list[Path] = field(default_factory=list)

    def count(self, examples: list[Example] | None = None) -> dict[str, int]:
        """Images per label (of `examples`, default all), in label order."""
        counts = dict.fromkeys(self.labels, 0)
        for example in self.examples if examples is None else examples:
            counts[self.labels[example.label]] += 1
        return counts


def label_folders(root: Path) -> list[Path]:
    """The label folders of DATASET, sorted; refuses a DATASET that cannot be one."""
    if not root.exists():
        raise TrainUsageError(f"{root}: no such folder; give a folder with one sub-folder of "
                              f"images per label")
    if not root.is_dir():
        raise TrainUsageError(f"{root}: is a file; give a folder with one sub-folder of images "
                              f"per label")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    stray = [p for p in entries if not p.is_dir()]
    if stray:
        raise DatasetError(f"{stray[0]}: a file where a label folder is expected; move it into "
                           f"the folder of its label (DATASET/<label>/{stray[0].name})")
    if len(entries) < 2:
        found = f"only {entries[0].name!r}" if entries else "none"
        raise DatasetError(f"{root}: needs at least 2 label folders, found {found}; make one "
                           f"folder per label, e.g. {root}/open and {root}/closed")
    return entries


def read_image(path: Path) -> np.ndarray | None:
    """The image shrunk to KEEP_SHORT_SIDE, or None if it is not a readable image."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or min(image.shape[:2]) < 8:
        return None
    short = min(image.shape[:2])
    if short > KEEP_SHORT_SIDE:
        scale = KEEP_SHORT_SIDE / short
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def load_dataset(root: Path) -> Dataset:
    """Read every image of every label folder; raises if a label has too few usable images."""
    folders = label_folders(root)
    labels = [folder.name for folder in folders]
    bad_names = [name for name in labels if not name.isprintable() or name != name.strip()]
    if bad_names:
        raise DatasetError(f"{root}/{bad_names[0]!r}: a label folder name with control "
                           f"characters or surrounding spaces; rename the folder")
    dataset = Dataset(root, labels, [])
    for index, folder in enumerate(folders):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and
                       not any(part.startswith(".") for part in p.relative_to(folder).parts))
        if not files:
            raise DatasetError(f"{folder}: empty; put at least {MIN_IMAGES} images of "
                               f"{folder.name!r} in it")
        for path in files:
            image = read_image(path)
            if image is None:
                dataset.unreadable.append(path)
            else:
                dataset.examples.append(Example(path, image, index))
    short = [(label, n) for label, n in dataset.count().items() if n < MIN_IMAGES]
    if short:
        label, n = short[0]
        skipped = sum(1 for p in dataset.unreadable if root / label in p.parents)
        note = f" ({skipped} unreadable skipped)" if skipped else ""
        raise DatasetError(f"{root / label}: {n} usable image{'s' if n != 1 else ''}{note}, "
                           f"needs at least {MIN_IMAGES}; add more examples of {label!r}")
    return dataset


def split(dataset: Dataset, seed: int) -> tuple[list[Example], list[Example]]:
    """Training and held-out examples, stratified: each label keeps about 20 % aside (>= 1)."""
    rng = random.Random(seed)
    train: list[Example] = []
    held_out: list[Example] = []
    for index in range(len(dataset.labels)):
        mine = [e for e in dataset.examples if e.label == index]
        rng.shuffle(mine)
        keep = max(1, round(len(mine) * HELD_OUT_FRACTION))
        held_out += mine[:keep]
        train += mine[keep:]
    return train, held_out
