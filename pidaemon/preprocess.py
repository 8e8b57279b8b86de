"""Frame preparation: any camera frame to the model's 224x224 RGB input.

Cropping and resizing happen once, in the capture thread, on the full frame: the queue then holds
small frames and the inference thread only converts to a normalised tensor. The crop keeps the
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
    """uint8 HxWx3 RGB to a normalised 1x3xHxW float tensor, as ToTensor + Normalize do."""

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._scale = (1.0 / (255.0 * torch.tensor(IMAGENET_STD))).view(3, 1, 1)
        self._offset = (torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)).view(3, 1, 1)

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        tensor = self._torch.from_numpy(rgb).permute(2, 0, 1).float()
        return tensor.mul_(self._scale).sub_(self._offset).unsqueeze_(0)
