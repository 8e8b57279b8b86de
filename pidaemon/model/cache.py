"""The compiled-model cache: TorchScript files that make warm starts fast and torchvision-free.

An entry is keyed by model name, quantized engine, weights identity and torch version, and carries
its own description (labels included) inside the file, so a copied or half-written file is
recognised as foreign or corrupt and rebuilt instead of crashing the daemon. Writes go to a
temporary file that is renamed into place, so a power cut never leaves a torn entry.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pidaemon.errors import first_line
from pidaemon.model.files import write_atomically

if TYPE_CHECKING:
    import torch

FORMAT = 1
META_NAME = "pi-infer.json"


def default_cache_dir() -> Path:
    """systemd's CacheDirectory= if set, else the XDG cache of the user running pi-infer."""
    systemd_dirs = os.environ.get("CACHE_DIRECTORY")
    if systemd_dirs:
        return Path(systemd_dirs.split(":")[0])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "pi-infer"


@dataclass(frozen=True)
class CacheKey:
    model: str
    engine: str
    weights: str
    torch: str

    @property
    def filename(self) -> str:
        return f"{self.model}-{self.engine}-{self.weights}-torch{self.torch}.pt"

    def same_model(self, meta: dict[str, Any]) -> bool:
        """True when `meta` describes this model, engine and weights (any torch version)."""
        return (meta.get("model"), meta.get("engine"), meta.get("weights")) == (
            self.model, self.engine, self.weights)


@dataclass
class CacheEntry:
    path: Path
    module: torch.jit.ScriptModule
    meta: dict[str, Any]


class CacheUnusable(Exception):
    """A cache file that cannot be used: corrupt, foreign, or for another model."""


class ModelCache:
    """Reads and atomically writes compiled models in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, key: CacheKey) -> Path:
        return self.directory / key.filename

    @staticmethod
    def present(path: Path) -> bool:
        """Something is at `path`; an unreadable directory counts as nothing cached."""
        try:
            return path.exists()
        except OSError:
            return False

    def load(self, path: Path, key: CacheKey, *, any_torch: bool = False) -> CacheEntry:
        """Load and check an entry; raises CacheUnusable with the reason."""
        import torch

        try:
            regular = stat.S_ISREG(path.stat().st_mode)
        except OSError as exc:
            raise CacheUnusable(f"cannot be read ({exc.strerror or exc})") from None
        if not regular:  # a directory, or a FIFO that would block the load forever
            raise CacheUnusable("is not a regular file")
        extra = {META_NAME: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "jit is deprecated"
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:  # noqa: BLE001 - any failure means "rebuild"
            raise CacheUnusable(f"cannot be loaded ({first_line(exc)})") from None
        try:
            meta = json.loads(extra[META_NAME] or "null")
        except ValueError:
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CacheUnusable("was not written by this version of pi-infer")
        if not key.same_model(meta) or (not any_torch and meta.get("torch") != key.torch):
            raise CacheUnusable(f"describes another model ({meta.get('model')}, "
                                f"{meta.get('engine')}, torch {meta.get('torch')})")
        labels = meta.get("labels")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise CacheUnusable("has no label list")
        return CacheEntry(path, module, meta)

    def other_torch_versions(self, key: CacheKey) -> list[Path]:
        """Entries for the same model built by other torch versions, newest file first."""
        pattern = f"{key.model}-{key.engine}-{key.weights}-torch*.pt"
        found = []
        try:
            for path in self.directory.glob(pattern):
                if path.name != key.filename and path.is_file():
                    found.append((path.stat().st_mtime, path))
        except OSError:
            pass  # an unreadable directory offers nothing
        return [path for _, path in sorted(found, reverse=True)]

    def save(self, key: CacheKey, module: torch.jit.ScriptModule, labels: list[str]) -> Path:
        """Write an entry atomically; raises OSError if the directory is not writable."""
        import torch

        meta = {"format": FORMAT, "model": key.model, "engine": key.engine,
                "weights": key.weights, "torch": key.torch, "labels": labels}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "jit is deprecated"
            return write_atomically(self.path_for(key), lambda f: torch.jit.save(
                module, f, _extra_files={META_NAME: json.dumps(meta)}))

