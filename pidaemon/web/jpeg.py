"""A camera image with the model's answer drawn on it, as JPEG, for the live page.

Drawn server side so every viewer (a phone, VLC, `curl > frame.jpg`) sees the same frame the
labels came from, without scripts. Only ever called on the page's own thread.
"""

from __future__ import annotations

import cv2
import numpy as np

QUALITY = 80
FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    """White text with a black outline: readable on any picture."""
    thick = max(1, round(scale * 2))
    cv2.putText(image, text, origin, FONT, scale, BLACK, thick + 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, FONT, scale, WHITE, thick, cv2.LINE_AA)


Box = tuple[tuple[float, float, float, float], str]  # fractions of the frame, and its caption
BOX_COLOUR = (0, 200, 255)


def annotate(image: np.ndarray, lines: list[str], footer: str,
             boxes: list[Box] | None = None) -> np.ndarray:
    """A copy of `image` with `lines` (the top-k) at the top left, `footer` at the bottom and
    each region's box with its state."""
    out = image.copy()  # the capture thread's image is shared: never draw on it
    height, width = out.shape[:2]
    scale = max(0.35, height / 900)
    step = round(30 * scale) + 6
    for (x1, y1, x2, y2), caption in boxes or []:
        top_left = (round(x1 * (width - 1)), round(y1 * (height - 1)))
        cv2.rectangle(out, top_left, (round(x2 * (width - 1)), round(y2 * (height - 1))),
                      BOX_COLOUR, max(1, round(scale * 2)), cv2.LINE_AA)
        _text(out, caption, (top_left[0] + 4, top_left[1] + step), scale)
    for i, line in enumerate(lines):
        _text(out, line, (8, step * (i + 1)), scale)
    if footer:
        _text(out, footer, (8, height - 10), scale)
    return out


def encode(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    if not ok:
        raise ValueError(f"cannot encode a frame of shape {image.shape} as JPEG")
    return data.tobytes()
