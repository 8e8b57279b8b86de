"""Refuse, before `import torch`, a torch build that cannot run on a Raspberry Pi 4.

Some aarch64 torch wheels use ARMv8.1 LSE atomics that the Pi 4's Cortex-A72 (ARMv8.0) lacks:
importing them kills the process with SIGILL ("Illegal instruction"), before any Python error
handling can say why. So the installed version is read from the distribution's metadata and
known-bad builds are turned into one clear error with the fix.
"""

import ast
import os
import platform
import re
from importlib import metadata

from pidaemon.errors import UnsupportedTorchError

OVERRIDE_ENV = "PI_INFER_ALLOW_TORCH"
GOOD_PAIR = "torch==2.9.1 torchvision==0.24.1"

# Measured on an emulated Cortex-A72: 2.4.0 dies at import (pytorch#132032), 2.6.0 in
# torch.jit.script (pytorch#146792), 2.10.0 at import (pytorch#174344). 2.4.1 and 2.9.1 run.
_CRASHES_ON_A72 = re.compile(r"(?:2\.4\.0|2\.6\.\d+|2\.10\.\d+)(?!\d)")
# torch/version.py holds e.g. `cuda: Optional[str] = '13.0'` (None in CPU builds).
_CUDA_LINE = re.compile(r"^cuda\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.MULTILINE)


def ensure_torch_runs_here() -> None:
    """Raise UnsupportedTorchError if the installed torch is known not to run on this aarch64 CPU.

    Never blocks other machines, a missing torch (its ImportError speaks for itself) or a user
    who sets PI_INFER_ALLOW_TORCH=1 (e.g. on a Pi 5, whose Cortex-A76 has LSE atomics).
    """
    if platform.machine() != "aarch64" or os.environ.get(OVERRIDE_ENV) == "1":
        return
    try:
        dist = metadata.distribution("torch")
    except metadata.PackageNotFoundError:
        return
    version = dist.version
    if _CRASHES_ON_A72.match(version):
        reason = (
            f"torch {version} is installed, and this torch crashes on Cortex-A72 (Raspberry Pi 4) "
            'with "Illegal instruction"'
        )
    elif (cuda := _cuda_version(dist)) is not None:
        reason = (
            f"torch {version} is installed, and it is a CUDA {cuda} build: it needs gigabytes of "
            "NVIDIA libraries and a GPU that a Raspberry Pi does not have"
        )
    else:
        return
    raise UnsupportedTorchError(
        f"{reason}; install {GOOD_PAIR} instead (pip install {GOOD_PAIR}, CPU builds that run "
        f"on a Pi 4), or set {OVERRIDE_ENV}=1 to use this torch anyway on a CPU known to run it"
    )


def _cuda_version(dist: metadata.Distribution) -> str | None:
    """Return torch.version.cuda (None for CPU builds), read from the file without importing it.

    The version string cannot tell: PyPI's aarch64 torch>=2.11 wheels are CUDA builds with a plain
    version, and its CPU wheels list nvidia-* requirements too (with x86_64-only markers).
    """
    try:
        source = dist.locate_file("torch/version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    match = _CUDA_LINE.search(source)
    value = ast.literal_eval(match.group(1)) if match else None
    return value if isinstance(value, str) else None
