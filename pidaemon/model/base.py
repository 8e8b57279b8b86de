"""What the pipeline asks of a loaded model, whichever engine runs it.

An engine's classifier maps a normalised Nx3x224x224 batch to the best classes, sizes its own
thread pool (the inference thread calls `set_threads`, so it never asks which engine it holds)
and releases what it holds on `close` (a child process, for the xnnpack engine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Classifier:
    """A loaded, warmed model with its labels."""

    labels: list[str]
    engine: str
    description: str

    def top_k(self, batch: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
        """Class indices and softmax scores of the `k` best classes for a 1-image batch."""
        return self.top_k_batch(batch, k)[0]

    def top_k_batch(self, batch: torch.Tensor, k: int) -> list[tuple[list[int], list[float]]]:
        """The `k` best classes of each image of an Nx3xHxW batch."""
        raise NotImplementedError

    def warm_up(self) -> int:
        """Run the model a few times so the first frame is not slow; returns its outputs."""
        raise NotImplementedError

    def set_threads(self, threads: int) -> None:
        """Run the model on `threads` threads from now on; called by the thread that runs it."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the model holds; it is not called again. Nothing to do by default."""
