"""Frame preparation: any camera frame to the model's 224x224 RGB input.

Cropping, resizing and normalising all happen in the capture thread, on the full frame, so they
overlap the model on another core and the inference thread only runs the model. The crop keeps the
central 224/256 of the short side, like torchvision's evaluation transform (resize 256, centre
crop 224), so predictions match the model's published accuracy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

INPUT_SIZE = 224
CROP_FRACTION = 224 / 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def is_valid_frame(frame: object) -> bool:
    """A frame the pipeline can use: a non-empty HxWx3 uint8 array."""
    return (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3
            and frame.shape[2] == 3 and frame.shape[0] >= 8 and frame.shape[1] >= 8)


def crop_and_resize(bgr: np.ndarray) -> np.ndarray:
    """Centre-crop to a square and resize to 224x224 RGB (INTER_LINEAR: ~10x cheaper than AREA)."""
    height, width = bgr.shape[:2]
    side = max(1, round(min(height, width) * CROP_FRACTION))
    top = (height - side) // 2
    left = (width - side) // 2
    square = bgr[top:top + side, left:left + side]
    if side != INPUT_SIZE:
        square = cv2.resize(square, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(square, cv2.COLOR_BGR2RGB)


class Normalizer:
    """uint8 HxWx3 RGB to a normalised 1x3xHxW float tensor, as ToTensor + Normalize do.

    OpenCV converts, scales and lays out the planes in one pass: ~0.06 ms for 224x224 against
    ~0.15 ms for the same three steps in torch, a few percent of the x86 model's time per frame.
    """

    def __init__(self) -> None:
        import torch

        self._from_numpy = torch.from_numpy
        self._params = cv2.dnn.Image2BlobParams(
            scalefactor=tuple(1.0 / (255.0 * s) for s in IMAGENET_STD),
            mean=tuple(255.0 * m for m in IMAGENET_MEAN), ddepth=cv2.CV_32F)

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        return self._from_numpy(cv2.dnn.blobFromImageWithParams(rgb, self._params))

    def many(self, images: list[np.ndarray]) -> torch.Tensor:
        """Several 224x224 RGB images as one Nx3xHxW batch."""
        return self._from_numpy(cv2.dnn.blobFromImagesWithParams(images, self._params))


def crop_box(bgr: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """A region (fractions x1, y1, x2, y2 of the frame) resized to 224x224 RGB, all of it.

    The whole box is kept, stretched if it is not square, so nothing the user framed is cut.
    """
    height, width = bgr.shape[:2]
    x1, y1, x2, y2 = box
    left, right = int(x1 * width), max(int(x1 * width) + 1, round(x2 * width))
    top, bottom = int(y1 * height), max(int(y1 * height) + 1, round(y2 * height))
    part = bgr[top:min(bottom, height), left:min(right, width)]
    part = cv2.resize(part, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(part, cv2.COLOR_BGR2RGB)
