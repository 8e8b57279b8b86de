"""What travels between the threads: a prepared frame, and the model's answer to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

    from pidaemon.config.regions import Region


@dataclass
class Frame:
    seq: int
    captured_at: float  # time.monotonic() just after the frame arrived
    # Nx3x224x224 normalised RGB, one row per region (1 row, the whole frame, without regions):
    # the inference thread only runs the model.
    batch: torch.Tensor
    regions: tuple[Region, ...] = ()  # the regions of the rows, as configured at capture
    camera: str | None = None  # the name in `cameras:`; None for the single `camera:`
    images: tuple[np.ndarray, ...] = ()  # the rows as 224x224 RGB, kept only for collect:


@dataclass(frozen=True)
class RegionResult:
    """One region's top-k, with the labels of the model that classified it."""

    name: str
    classes: list[int]
    scores: list[float]
    labels: list[str]

    @property
    def label(self) -> str:
        return self.labels[self.classes[0]]


@dataclass
class Result:
    seq: int
    captured_at: float
    finished_at: float
    inference_ms: float
    classes: list[int]  # with regions: the first region's
    scores: list[float]
    regions: tuple[RegionResult, ...] = ()
    camera: str | None = None  # the name in `cameras:`; None for the single `camera:`
    images: tuple[np.ndarray, ...] = ()  # the frame's rows, passed on for collect: (else ())
    # The labels of the model that made it: after a reload swaps in a model with other labels,
    # results still queued from the old one must not be named with the new labels.
    labels: list[str] | None = None

    @property
    def latency_ms(self) -> float:
        """From the frame's arrival to its result: queue wait plus inference."""
        return (self.finished_at - self.captured_at) * 1000
