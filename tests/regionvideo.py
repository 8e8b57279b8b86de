"""Videos whose frames show a different photo in each half, for the region tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .conftest import IMAGES

CELL = 320  # each half is a square, so a half-frame region is classified undistorted


def cell(name: str) -> np.ndarray:
    """The photo letterboxed into a CELLxCELL square."""
    image = cv2.imread(str(IMAGES / name))
    scale = CELL / max(image.shape[:2])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    top, left = (CELL - resized.shape[0]) // 2, (CELL - resized.shape[1]) // 2
    square = np.zeros((CELL, CELL, 3), np.uint8)
    square[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    return square


def write_pairs(path: Path, pairs: list[tuple[str, str]], frames_each: int,
                fps: int = 10) -> Path:
    """A real MJPG video: each (left photo, right photo) pair for `frames_each` frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (2 * CELL, CELL))
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for left, right in pairs:
        frame = np.hstack([cell(left), cell(right)])
        for _ in range(frames_each):
            writer.write(frame)
    writer.release()
    return path


LEFT = [0, 0, 0.5, 1]
RIGHT = [0.5, 0, 1, 1]
