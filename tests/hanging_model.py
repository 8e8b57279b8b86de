"""A user's TorchScript model that hangs: a real way to freeze the inference thread.

It answers the daemon's warm-up (all-zero input) and then never returns on a camera frame,
spinning in the TorchScript interpreter with the GIL released, as a model stuck in a native
loop would. The watchdog tests point `model.torchscript` at it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

CLASSES = 1000  # as many outputs as the ImageNet labels file has lines


def write_hanging_model(path: Path) -> Path:
    import torch

    class HangOnFrames(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 1000)
            if bool(x.abs().sum() > 0):
                # A loop the optimiser cannot drop: its result is returned, and it never ends.
                while bool(out.sum() >= 0):
                    out = out * 1.0
            return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
        torch.jit.save(torch.jit.script(HangOnFrames()), str(path))
    return path
