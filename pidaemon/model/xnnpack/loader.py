"""The xnnpack engine for the daemon: the cached program, exported on a miss, run in a child.

The program is keyed like the compiled-model cache (model name, weights identity, in the same
directory) but by executorch's release instead of torch's. A cached program that is torn, foreign
or that the runtime refuses is exported again; every failure is one ModelError naming the fix.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from pathlib import Path

from pidaemon.config import ModelConfig
from pidaemon.errors import ModelError, first_line
from pidaemon.model.base import Classifier
from pidaemon.model.cache import default_cache_dir
from pidaemon.model.files import (
    DEFAULT_WEIGHTS,
    DEFAULT_WEIGHTS_FILE,
    check_label_count,
    default_weights,
    read_labels,
    read_state_dict,
    refuse_special_file,
    weights_identity,
)
from pidaemon.model.xnnpack.cache import (
    ProgramCache,
    ProgramKey,
    ProgramUnusable,
    executorch_version,
)
from pidaemon.model.xnnpack.child import ChildRefused, SubprocessXnnpackClassifier
from pidaemon.model.xnnpack.export import WeightsMismatch, export_mobilenet_v2
from pidaemon.model.xnnpack.runtime import INSTALL, require_runtime

log = logging.getLogger("pi-infer")


def xnnpack_installed() -> bool:
    """ExecuTorch's runtime is installed here (whether it has XNNPACK, the child finds out)."""
    try:
        require_runtime()
    except ModelError:
        return False
    return True


def load_xnnpack(model_cfg: ModelConfig, threads: int) -> Classifier:
    """The warmed xnnpack classifier of `model_cfg`, its child running `threads` threads."""
    if model_cfg.torchscript is not None:
        refuse_torchscript(model_cfg.torchscript)
    require_runtime()  # a missing runtime is named before any export is tried
    cache = ProgramCache(Path(model_cfg.cache_dir) if model_cfg.cache_dir else default_cache_dir())
    key = ProgramKey(model_cfg.name, weights_identity(model_cfg), executorch_version())
    try:
        program, labels = cache.load(key)
        description = f"ExecuTorch program {program}"
        cached = True
    except ProgramUnusable as exc:
        if "is missing" not in str(exc):
            log.warning("model cache %s %s; exporting it again", cache.program_path(key), exc)
        program, labels, description = _export(model_cfg, cache, key)
        cached = False
    try:
        classifier = SubprocessXnnpackClassifier(program, labels, description, threads)
    except ChildRefused as exc:  # a child that died (SIGILL) would die on a new export too
        if not cached:
            raise
        log.warning("model cache %s cannot be run (%s); exporting it again", program, exc)
        program, labels, description = _export(model_cfg, cache, key)
        classifier = SubprocessXnnpackClassifier(program, labels, description, threads)
    try:
        if model_cfg.labels is not None:
            classifier.labels = read_labels(model_cfg.labels)
        check_label_count(model_cfg, classifier.labels, classifier.warm_up())
    except BaseException:
        classifier.close()
        raise
    return classifier


def refuse_torchscript(path: str) -> None:
    """A TorchScript model cannot run on this engine: one line saying why and what to use."""
    import torch

    refuse_special_file(path, "model.torchscript")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
            scripted = torch.jit.load(path, map_location="cpu")
        quantized = "quantized::" in str(scripted.inlined_graph)
    except Exception:  # noqa: BLE001 - the torch engines report a broken file in detail
        quantized = False
    if quantized:
        raise ModelError(f"model.torchscript: {path}: a quantized TorchScript model cannot be "
                         f"converted for inference.engine: xnnpack; set inference.engine: "
                         f"qnnpack or x86 for it")
    raise ModelError(f"model.torchscript: {path}: inference.engine: xnnpack runs only the "
                     f"built-in MobileNetV2 (a float model would need calibration images to "
                     f"quantize); set inference.engine: qnnpack or x86 for it")


def _export(model_cfg: ModelConfig, cache: ProgramCache,
            key: ProgramKey) -> tuple[Path, list[str], str]:
    """Export the program into the cache (or a temporary file if the cache is not writable)."""
    weights = default_weights()
    state_dict = read_state_dict(model_cfg.weights, weights)
    labels = list(weights.meta["categories"])
    source = model_cfg.weights or DEFAULT_WEIGHTS
    target = cache.program_path(key)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=target.parent)
        probe.close()
    except OSError as exc:
        log.warning("cannot write the model cache in %s (%s); the next start will export the "
                    "model again", cache.directory, exc.strerror or exc)
        target = Path(tempfile.mkdtemp(prefix="pi-infer-")) / target.name
    started = time.monotonic()
    try:
        export_mobilenet_v2(state_dict, target)
    except WeightsMismatch as exc:
        raise ModelError(f"model.weights: {source}: cannot be exported for inference.engine: "
                         f"xnnpack, not torchvision's quantized MobileNetV2 ({exc}); use "
                         f"torchvision's {DEFAULT_WEIGHTS_FILE} or another engine") from None
    except Exception as exc:  # noqa: BLE001 - torch.export and the lowering fail in many ways
        raise ModelError(f"inference.engine: xnnpack: exporting the model failed "
                         f"({first_line(exc)}); install ExecuTorch's exporter with {INSTALL}, "
                         f"or choose another engine") from None
    if target.parent == cache.directory:
        cache.describe(key, labels)
        log.info("model cache written: %s (exported in %.1f s)", target,
                 time.monotonic() - started)
    return target, labels, f"ExecuTorch program exported from {source}"
