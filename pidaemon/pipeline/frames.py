"""What travels between the threads: a prepared frame, and the model's answer to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass
class Frame:
    seq: int
    captured_at: float  # time.monotonic() just after the frame arrived
    batch: torch.Tensor  # 1x3x224x224 normalised RGB: the inference thread only runs the model
    image: np.ndarray | None = None  # the 224x224 RGB it was made from, kept only to collect


@dataclass
class Result:
    seq: int
    captured_at: float
    finished_at: float
    inference_ms: float
    classes: list[int]
    scores: list[float]
    image: np.ndarray | None = None  # the frame's, passed on for collect: (else None)
    # The labels of the model that made it: after a reload swaps in a model with other labels,
    # results still queued from the old one must not be named with the new labels.
    labels: list[str] | None = None

    @property
    def latency_ms(self) -> float:
        """From the frame's arrival to its result: queue wait plus inference."""
        return (self.finished_at - self.captured_at) * 1000
