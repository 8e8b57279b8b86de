"""Views of one example: the daemon's own crop, then flips, small crops and shifts, brightness.

View 0 is exactly what the daemon feeds the model for a whole frame (`crop_and_resize`), so the
held-out score measures what the daemon will see; the others teach the head to ignore what a
camera changes from one frame to the next.
"""

from __future__ import annotations

import random

import cv2
import numpy as np

from pidaemon.model.preprocess import INPUT_SIZE, crop_and_resize

MIN_CROP = 0.75  # fraction of the short side a random crop keeps
BRIGHTNESS = (0.7, 1.3)


def views(image: np.ndarray, count: int, rng: random.Random) -> list[np.ndarray]:
    """`count` 224x224 RGB views of a BGR image; the first is the daemon's preprocessing."""
    out = [crop_and_resize(image)]
    for _ in range(count - 1):
        out.append(_random_view(image, rng))
    return out


def _random_view(image: np.ndarray, rng: random.Random) -> np.ndarray:
    height, width = image.shape[:2]
    side = max(8, round(min(height, width) * rng.uniform(MIN_CROP, 1.0)))
    top = rng.randint(0, height - side)
    left = rng.randint(0, width - side)
    square = cv2.resize(image[top:top + side, left:left + side], (INPUT_SIZE, INPUT_SIZE),
                        interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        square = cv2.flip(square, 1)
    square = cv2.convertScaleAbs(square, alpha=rng.uniform(*BRIGHTNESS))
    return cv2.cvtColor(square, cv2.COLOR_BGR2RGB)
