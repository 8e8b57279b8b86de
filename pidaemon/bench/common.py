"""What every bench measurement shares: the job, its inputs, the durations and constants."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from pidaemon.config import Config
from pidaemon.model.preprocess import INPUT_SIZE

REPO = Path(__file__).resolve().parents[2]
WEIGHTS_FILE = "models/mobilenet_v2_qnnpack_reconstructed.pth"
LABELS_FILE = "models/imagenet_classes.txt"
LITERT_FILE = "models/mobilenet_v2_1.0_224_quant.tflite"
PHOTO_SUFFIXES = (".jpg", ".png", ".bmp")

PI_FPS = 36.0  # what the tutorial asks a Raspberry Pi camera for
OVERLOAD_FPS = 60.0
WARMUP_S = 1.0  # first frames through a new thread are slower (TorchScript profiling, pools)
TOP_K = 5
READY_TIMEOUT_S = 180.0

# seconds: (full run, --quick)
DURATIONS = {"scenario": (6.0, 1.5), "model": (1.5, 0.5), "steady": (3.0, 1.0)}

T = TypeVar("T")
@dataclass(frozen=True)
class Job:
    """Everything a measuring process needs (picklable, sent to a spawned interpreter)."""

    config: Config
    photos: tuple[str, ...]
    seconds: float
    work: str


# -- inputs -----------------------------------------------------------------------------------
def shared_dir(option: Path | None) -> Path | None:
    """Test assets: --shared, else $PI_INFER_SHARED, else shared/ beside a source checkout."""
    candidate = option or Path(os.environ.get("PI_INFER_SHARED", REPO.parent / "shared"))
    return candidate.resolve() if candidate.is_dir() else None


def require_shared(option: Path | None, command: str) -> Path | None:
    """`shared_dir`, or None after telling the user where the assets were looked for."""
    shared = shared_dir(option)
    if shared is None:
        print(f"pi-infer bench {command}: the test weights and photos were not found; pass "
              f"--shared DIR or set PI_INFER_SHARED", file=sys.stderr)
    return shared


def bench_config(base: Config, shared: Path | None, cache_dir: Path) -> Config:
    """The user's config with the shared test weights (when it names none) and a private cache."""
    model = base.model
    if shared is not None and model.weights is None and model.torchscript is None:
        weights, labels = shared / WEIGHTS_FILE, shared / LABELS_FILE
        if weights.is_file():
            model = dataclasses.replace(model, weights=str(weights))
        if model.labels is None and labels.is_file():
            model = dataclasses.replace(model, labels=str(labels))
    model = dataclasses.replace(model, cache_dir=str(cache_dir), top_k=TOP_K)
    camera = dataclasses.replace(base.camera, width=INPUT_SIZE, height=INPUT_SIZE, fps=PI_FPS)
    return dataclasses.replace(base, model=model, camera=camera)


def camera_frames(photos: Sequence[str]) -> list[np.ndarray]:
    """What a camera asked for 224x224 sees: each photo centre-cropped square and scaled."""
    frames = []
    for path in photos:
        image = cv2.imread(path)
        if image is None:
            continue
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = image[top:top + side, left:left + side]
        frames.append(cv2.resize(square, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA))
    if not frames:  # no photos at hand: a fixed noise image costs the model just the same
        rng = np.random.default_rng(0)
        frames.append(rng.integers(0, 256, (INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8))
    return frames


def duration(name: str, quick: bool) -> float:
    full, short = DURATIONS[name]
    return short if quick else full


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, as the daemon's stats compute p95."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


