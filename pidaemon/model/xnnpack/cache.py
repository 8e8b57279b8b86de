"""Cache entries for the `xnnpack` engine: an ExecuTorch program (`.pte`) and its description.

A `.pte` has no room for our metadata, so each program has a JSON file beside it naming the
model, weights, executorch release and labels, and the program's SHA-256: a torn, copied or
foreign pair is recognised and exported again instead of crashing the daemon. The program is
written first and the description last (both atomically), so a description always describes a
complete program. The key holds the executorch release, not torch's: the runtime reads the
program, and a program from another release is exported again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pidaemon.model.files import write_atomically

FORMAT = 1


def executorch_version() -> str:
    try:
        return metadata.version("executorch")
    except metadata.PackageNotFoundError:
        return "none"


@dataclass(frozen=True)
class ProgramKey:
    model: str
    weights: str
    executorch: str

    @property
    def stem(self) -> str:
        return f"{self.model}-xnnpack-{self.weights}-executorch{self.executorch}"


class ProgramUnusable(Exception):
    """A cached program that cannot be used: missing, torn, foreign or corrupt."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ProgramCache:
    """ExecuTorch programs and their descriptions in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def program_path(self, key: ProgramKey) -> Path:
        return self.directory / f"{key.stem}.pte"

    def description_path(self, key: ProgramKey) -> Path:
        return self.directory / f"{key.stem}.json"

    def load(self, key: ProgramKey) -> tuple[Path, list[str]]:
        """The program's path and labels; raises ProgramUnusable with the reason."""
        program = self.program_path(key)
        try:
            meta = json.loads(self.description_path(key).read_text(encoding="utf-8"))
            digest = _digest(program)
        except FileNotFoundError as exc:
            raise ProgramUnusable(f"{exc.filename} is missing") from None
        except (OSError, ValueError) as exc:
            raise ProgramUnusable(f"cannot be read ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ProgramUnusable("was not written by this version of pi-infer")
        wanted = {"model": key.model, "weights": key.weights, "executorch": key.executorch,
                  "sha256": digest}
        if any(meta.get(name) != value for name, value in wanted.items()):
            raise ProgramUnusable("describes another program or was cut short")
        labels = meta.get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ProgramUnusable("has no label list")
        return program, labels

    def describe(self, key: ProgramKey, labels: list[str]) -> Path:
        """Write the description of the program already at program_path(key)."""
        meta = {"format": FORMAT, "model": key.model, "weights": key.weights,
                "executorch": key.executorch, "labels": labels,
                "sha256": _digest(self.program_path(key))}
        text = json.dumps(meta).encode()
        return write_atomically(self.description_path(key), lambda f: f.write(text))
