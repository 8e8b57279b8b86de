"""The model's files: weights, labels and their identity, each problem one ModelError naming the
file and the fix. Shared by every engine's loader."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from pidaemon.config import ModelConfig
from pidaemon.errors import ModelError, first_line

DEFAULT_WEIGHTS = "IMAGENET1K_QNNPACK_V1"  # torchvision's only pretrained quantized MobileNetV2
DEFAULT_WEIGHTS_FILE = "mobilenet_v2_qnnpack_37f702c5.pth"


def refuse_special_file(path: str, what: str) -> None:
    """A FIFO or device would block the read forever (nobody writes it): refuse it by name."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # the read that follows says what is wrong
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ModelError(f"{what}: {path}: is not a regular file (a FIFO, socket or device); "
                         f"give the path of a file")


def read_labels(path: str) -> list[str]:
    refuse_special_file(path, "model.labels")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"model.labels: {path}: no such file; give a text file with one label "
                         f"per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"model.labels: {path}: cannot read it ({exc}); give a UTF-8 text file "
                         f"with one label per line") from None
    labels = [line.strip() for line in text.rstrip("\n").split("\n")]
    if not labels or labels == [""]:
        raise ModelError(f"model.labels: {path}: is empty; give one label per line")
    return labels


def sha256_of(path: str, what: str) -> str:
    refuse_special_file(path, what)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise ModelError(f"{what}: {path}: no such file; fix the path in the config") from None
    except OSError as exc:
        raise ModelError(f"{what}: {path}: cannot read it ({exc.strerror}); check its "
                         f"permissions") from None
    return digest.hexdigest()


def default_weights() -> Any:
    """torchvision's entry for the default weights (their URL and labels)."""
    import torch

    try:
        from torchvision.models.quantization import MobileNet_V2_QuantizedWeights
    except Exception as exc:  # noqa: BLE001 - a broken torchvision raises many kinds
        raise ModelError(f"torchvision cannot be imported ({exc}); it is needed once to build the "
                         f"model: install the torchvision that matches torch "
                         f"{torch.__version__}") from None
    return MobileNet_V2_QuantizedWeights[DEFAULT_WEIGHTS]


def read_state_dict(path: str | None, weights_enum: Any) -> Mapping[str, Any]:
    import torch

    if path is None:
        try:
            return weights_enum.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - network, disk and hash errors alike
            hub = Path(torch.hub.get_dir()) / "checkpoints"
            raise ModelError(f"cannot download the default weights {weights_enum.url} "
                             f"({first_line(exc)}); download that file on a connected machine "
                             f"and set model.weights: /path/to/{DEFAULT_WEIGHTS_FILE}, or copy it "
                             f"into {hub}/") from None
    refuse_special_file(path, "model.weights")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"model.weights: {path}: no such file; fix the path or set "
                         f"model.weights: null to download torchvision's weights") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for bad files
        raise ModelError(f"model.weights: {path}: not a readable state_dict, truncated or "
                         f"corrupt ({unpickling_reason(exc)}); download it again or save it with "
                         f"torch.save(model.state_dict(), path)") from None
    if not isinstance(state_dict, Mapping):
        raise ModelError(f"model.weights: {path}: holds a {type(state_dict).__name__}, not a "
                         f"state_dict; save it with torch.save(model.state_dict(), path)")
    return state_dict


# torch's weights_only refusal opens with a paragraph of advice (load with weights_only=False,
# which would run the file's code) and gives the real reason on the lines after it.
WEIGHTS_ONLY_PREAMBLE = "Weights only load failed"
UNPICKLER_MARKER = "WeightsUnpickler error:"


def unpickling_reason(exc: BaseException) -> str:
    """Why torch.load refused a file: the unpickler's own words, not the advice before them."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines or not lines[0].startswith(WEIGHTS_ONLY_PREAMBLE):
        return first_line(exc)
    reason = [line.split(UNPICKLER_MARKER, 1)[-1].strip() for line in lines[1:]
              if not line.startswith("Check the documentation")]
    return " ".join(part for part in reason if part) or first_line(exc)


def weights_identity(model_cfg: ModelConfig) -> str:
    """What names the weights in cache keys: torchvision's name, or the file's hash prefix."""
    if model_cfg.weights is None:
        return DEFAULT_WEIGHTS
    return sha256_of(model_cfg.weights, "model.weights")[:16]


def check_label_count(model_cfg: ModelConfig, labels: list[str], outputs: int) -> None:
    """One label per output of the model, or the fix."""
    if len(labels) != outputs:
        source = model_cfg.labels or "the built-in labels"
        raise ModelError(f"model.labels: {source} has {len(labels)} labels but the model has "
                         f"{outputs} outputs; give a labels file with one line per output")


def write_atomically(target: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Let `write` fill a temporary file beside `target`, then rename it into place (readable by
    all: the service's dynamic user reads what root prepared): a power cut never leaves a torn
    file, and a reader never sees half of one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target
