"""Writing DIR: model.pt, labels.txt and report.json appear together or not at all.

Everything is written into a sibling temporary folder, synced, and then renamed into place, so a
daemon (or a power cut) never sees half a model, and an existing DIR stays intact until the new
one is complete. An existing DIR is only replaced if it is empty or an earlier output of
`pi-infer train`, never some other folder a typo pointed at.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from pidaemon.train.errors import TrainUsageError

MODEL = "model.pt"
LABELS = "labels.txt"
REPORT = "report.json"
TOOL = "pi-infer train"
OURS = {MODEL, LABELS, REPORT}


def check_output(target: Path) -> None:
    """Refuse early (before minutes of work) an output DIR that must not be replaced."""
    if target.exists() and not target.is_dir():
        raise TrainUsageError(f"--output {target}: is a file; give a folder for the model")
    if target.is_dir():
        names = {p.name for p in target.iterdir()}
        if names and not _is_ours(target, names):
            raise TrainUsageError(f"--output {target}: exists and is not an output of pi-infer "
                                  f"train; give a new folder (it is replaced as a whole)")
    parent = target.parent
    if not parent.is_dir():
        raise TrainUsageError(f"--output {target}: {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise TrainUsageError(f"--output {target}: cannot write in {parent}; choose a folder "
                              f"you can write to")


def _is_ours(target: Path, names: set[str]) -> bool:
    if not names <= OURS or REPORT not in names:
        return False
    try:
        return json.loads((target / REPORT).read_text(encoding="utf-8")).get("tool") == TOOL
    except (OSError, ValueError, AttributeError):
        return False


def write_output(target: Path, module: Any, labels: list[str], report: dict[str, Any]) -> None:
    """Write the three files into a temporary sibling folder, then swap it in for `target`."""
    import torch

    check_output(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(module, str(staging / MODEL))
        (staging / LABELS).write_text("".join(f"{label}\n" for label in labels),
                                      encoding="utf-8")
        (staging / REPORT).write_text(json.dumps({"tool": TOOL, **report}, indent=2) + "\n",
                                      encoding="utf-8")
        for name in OURS:  # readable by the service's own user, whatever the umask
            os.chmod(staging / name, 0o644)
            _fsync(staging / name)
        os.chmod(staging, 0o755)
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, target: Path) -> None:
    """Rename the complete new folder into place; the old one is removed only afterwards."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    try:
        os.replace(staging, target)
    except OSError:
        if old is not None:
            os.replace(old / target.name, target)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    _fsync(target.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
