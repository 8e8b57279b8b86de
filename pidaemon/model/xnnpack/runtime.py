"""ExecuTorch's runtime in this process: an XNNPACK int8 program (`.pte`) as a Classifier.

The daemon runs it in a child process (child.py), which uses this class.

Only executorch's compiled bindings (`_C`, named `_portable_lib` in 1.0.x) are imported, after
torch, and only where the model runs (the daemon's parent process merely looks for them): the
`portable_lib` wrapper would also import the exporter (seconds of start-up, and ruamel.yaml,
tabulate, torchao, sympy).
The XNNPACK thread pool is ExecuTorch's own, so `torch.set_num_threads` does not reach it;
`set_threads` resets it and loads the program again so no method keeps the old pool.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pidaemon.errors import ModelError, first_line
from pidaemon.model.base import Classifier
from pidaemon.model.xnnpack import ENGINE

if TYPE_CHECKING:
    import torch

WARMUP_RUNS = 3
INSTALL = ("pip install --no-deps -r packaging/xnnpack-requirements.txt (see "
           "docs/xnnpack-engine.md)")


BINDINGS = ("executorch.extension.pybindings._C",  # executorch >= 1.1
            "executorch.extension.pybindings._portable_lib")  # 1.0.x


def require_runtime() -> None:
    """Raise the ModelError naming the install command unless ExecuTorch's bindings are
    installed; looks for them without loading them (only the child process loads them)."""
    reason = "no module named executorch"
    for name in BINDINGS:
        try:
            if importlib.util.find_spec(name) is not None:
                return
        except (ImportError, ValueError) as exc:
            reason = first_line(exc)
    raise ModelError(f"inference.engine: xnnpack needs ExecuTorch's runtime ({reason}); "
                     f"install it with {INSTALL}, or choose another engine")


def runtime() -> Any:
    """executorch's runtime bindings with the XNNPACK backend, or a ModelError saying why not."""
    require_runtime()
    import torch  # noqa: F401 - the bindings link libtorch and need it loaded first

    try:
        bindings = importlib.import_module(BINDINGS[0])
    except ImportError:
        try:
            bindings = importlib.import_module(BINDINGS[1])
        except ImportError as exc:
            raise ModelError(f"inference.engine: xnnpack: ExecuTorch's runtime cannot be loaded "
                             f"({first_line(exc)}); reinstall it with {INSTALL}") from None
    if "XnnpackBackend" not in bindings._get_registered_backend_names():
        raise ModelError(f"inference.engine: xnnpack: this ExecuTorch build has no XNNPACK "
                         f"backend; install the wheel named by {INSTALL}")
    return bindings


def load_program(rt: Any, path: Path) -> Any:
    """The program at `path`, checked now (the bindings map the file and parse it lazily)."""
    try:
        module = rt._load_for_executorch(str(path))
        names = module.method_names()
    except Exception as exc:  # noqa: BLE001 - the bindings raise RuntimeError et al.
        raise ModelError(f"{path}: not a loadable ExecuTorch program ({first_line(exc)}); "
                         f"delete it and run pi-infer prepare to export it again") from None
    if "forward" not in names:
        raise ModelError(f"{path}: an ExecuTorch program without a forward method "
                         f"(it has {', '.join(names) or 'none'}); export the model again")
    return module


class XnnpackClassifier(Classifier):
    """A loaded `.pte` with its labels; calls are serialised because ExecuTorch methods are not
    reentrant."""

    engine = ENGINE

    def __init__(self, program: Path, labels: list[str], description: str,
                 threads: int = 1) -> None:
        self.program = program
        self.labels = labels
        self.description = description
        self.threads = 0
        self._lock = threading.Lock()
        self._method: Any = None
        self.set_threads(threads)

    def set_threads(self, threads: int) -> None:
        """Size ExecuTorch's pool to `threads` and reload the program so the method uses it."""
        if threads == self.threads and self._method is not None:
            return
        rt = runtime()
        with self._lock:
            rt._unsafe_reset_threadpool(threads)
            self._method = load_program(rt, self.program)
            self.threads = threads

    def module(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits for a 1x3x224x224 float batch (the name matches the torch engines' module)."""
        with self._lock:
            return self._method.forward((batch.contiguous(),))[0]

    def top_k_batch(self, batch: torch.Tensor, k: int) -> list[tuple[list[int], list[float]]]:
        """The `k` best classes of each image, one call each (the program takes one image)."""
        return [top_k_of(self.module(image.unsqueeze(0)), k) for image in batch]

    def warm_up(self) -> int:
        """Run the program a few times (XNNPACK packs weights on first call); returns outputs."""
        import torch

        dummy = torch.zeros(1, 3, 224, 224)
        for _ in range(WARMUP_RUNS):
            out = self.module(dummy)
        return int(out.shape[-1])


def top_k_of(logits: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
    """Class indices and softmax scores of the `k` best classes of one image's logits."""
    scores, indices = logits.float().softmax(-1).reshape(-1).topk(min(k, logits.shape[-1]))
    return indices.tolist(), scores.tolist()
