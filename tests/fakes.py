"""Stand-ins for what a test cannot have here (a live camera, a slow or hung model, a sink that
keeps everything), each a real FrameSource, Classifier or Sink the pipeline uses unchanged."""

from __future__ import annotations

import threading
import time
from typing import Any

import cv2

from pidaemon.model.classifier import TorchClassifier
from pidaemon.pipeline import Result, Snapshot
from pidaemon.pipeline.sink import Sink
from pidaemon.sources import FrameSource, Grant

from .conftest import IMAGES


class PhotoCamera(FrameSource):
    """A live camera showing one photo at `fps`; counts how often it was opened."""

    def __init__(self, photo: str, fps: float = 50.0) -> None:
        super().__init__(f"photo:{photo}")
        self.image = cv2.imread(str(IMAGES / photo))
        self.period = 1.0 / fps
        self.opened = 0
        self._next = 0.0

    def open(self) -> None:
        self.opened += 1
        height, width = self.image.shape[:2]
        self.grant = Grant(f"{width}x{height} photo", {"width": width, "height": height}, "test")
        self._next = time.monotonic()

    def read(self) -> tuple[bool, Any]:
        self._next = max(self._next + self.period, time.monotonic())
        time.sleep(max(0.0, self._next - time.monotonic()))
        return True, self.image

    def release(self) -> None:
        pass


class BrokenCamera(PhotoCamera):
    def read(self) -> tuple[bool, Any]:
        raise RuntimeError("the driver crashed")


class SlowModel(TorchClassifier):
    """The real classifier, made to take at least `delay` s per frame, or to hang on demand."""

    def __init__(self, real: TorchClassifier, delay: float = 0.0) -> None:
        super().__init__(real.module, real.labels, real.engine, real.description)
        self.real, self.delay = real, delay
        self.running = threading.Event()
        self.running.set()  # cleared: the next call hangs until it is set again

    def top_k_batch(self, batch: Any, k: int) -> list[tuple[list[int], list[float]]]:
        self.running.wait()
        time.sleep(self.delay * len(batch))
        return self.real.top_k_batch(batch, k)


class Recorder(Sink):
    def __init__(self) -> None:
        self.results: list[Result] = []
        self.snapshots: list[Snapshot] = []

    def on_result(self, result: Result, labels: list[str]) -> None:
        self.results.append(result)

    def on_stats(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def build_small_model(model_cfg: Any, engine: str) -> tuple[Any, list[str]]:
    """A stand-in for classifier.build_mobilenet_v2 that compiles in milliseconds: 1000 outputs
    (the ImageNet labels) from the image's mean colour. For tests of the compiled-model cache,
    which rebuild the model whenever an entry is unusable; the real build has a test of its own."""
    import torch

    from .conftest import LABELS

    class MeanColour(torch.nn.Module):
        def __init__(self, classes: int) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    return MeanColour(1000).eval(), LABELS.read_text().splitlines()
