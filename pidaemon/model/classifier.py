"""Loading the classifier: engine choice, weights, TorchScript, labels and the compiled cache.

Every way the model can be wrong (missing, truncated or foreign weights, a broken TorchScript
file, a labels file that does not match) becomes one ModelError naming the file and the fix,
raised before the daemon reports READY. The torch engines (qnnpack, x86, fbgemm) run here; the
xnnpack engine (ExecuTorch) has its own loader in model.xnnpack.
"""

from __future__ import annotations

import logging
import platform
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pidaemon.config import InferenceConfig, ModelConfig
from pidaemon.cpus import resolve_threads
from pidaemon.errors import ModelError, first_line
from pidaemon.model.base import Classifier
from pidaemon.model.cache import CacheKey, CacheUnusable, ModelCache, default_cache_dir
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
from pidaemon.model.xnnpack import ENGINE as XNNPACK_ENGINE
from pidaemon.model.xnnpack.loader import load_xnnpack

if TYPE_CHECKING:
    import torch

log = logging.getLogger("pi-infer")

WARMUP_RUNS = 3


def select_engine(requested: str) -> str:
    """`auto` means qnnpack on Arm (its kernels are tuned for it), x86 (or fbgemm) elsewhere.

    It never means xnnpack (docs/xnnpack-engine.md): on x86 xnnpack is no faster than x86
    and costs a second process, and the aarch64 ExecuTorch that fits the Pi's torch dies of
    SIGILL on a Cortex-A72 (Pi 4); `inference.engine: xnnpack` asks for it explicitly.
    """
    import torch

    if requested == XNNPACK_ENGINE:
        return requested
    supported = torch.backends.quantized.supported_engines
    if requested == "auto":
        machine = platform.machine().lower()
        if machine.startswith(("arm", "aarch64")):
            preferred = ["qnnpack"]
        else:
            preferred = ["x86", "fbgemm", "qnnpack"]
        requested = next((e for e in preferred if e in supported), "qnnpack")
    if requested not in supported:
        raise ModelError(f"inference.engine: {requested} is not supported by this torch build "
                         f"(supported: {', '.join(e for e in supported if e != 'none')}); "
                         f"set inference.engine: auto")
    return requested


class TorchClassifier(Classifier):
    """A TorchScript or eager torch module run by one of torch's quantized engines."""

    def __init__(self, module: Any, labels: list[str], engine: str, description: str) -> None:
        self.module = module
        self.labels = labels
        self.engine = engine
        self.description = description

    def top_k_batch(self, batch: torch.Tensor, k: int) -> list[tuple[list[int], list[float]]]:
        """The `k` best classes of each image of an Nx3xHxW batch, in one call of the model."""
        import torch

        with torch.inference_mode():
            logits = self.module(batch)
            scores, indices = logits.float().softmax(-1).topk(min(k, len(self.labels)), dim=-1)
        return list(zip(indices.tolist(), scores.tolist(), strict=True))

    def warm_up(self) -> int:
        """Run the model a few times (TorchScript optimises on first calls); returns outputs."""
        import torch

        dummy = torch.zeros(1, 3, 224, 224)
        with torch.inference_mode():
            for _ in range(WARMUP_RUNS):
                out = self.module(dummy)
        return int(out.shape[-1])

    def set_threads(self, threads: int) -> None:
        """torch's intra-op threads: the OpenMP setting is per calling thread, so the inference
        thread calls this; it also resizes the process-wide qnnpack pool."""
        import torch

        torch.set_num_threads(threads)


def build_mobilenet_v2(model_cfg: ModelConfig, engine: str) -> tuple[Any, list[str]]:
    """torchvision's quantized MobileNetV2 with its weights, packed for `engine`."""
    import torch

    weights_enum = default_weights()
    from torchvision.models.quantization import mobilenet_v2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The builder switches the engine to qnnpack; weights are packed for the engine that is
        # current at load_state_dict, so select ours in between.
        model = mobilenet_v2(weights=None, quantize=True)
        torch.backends.quantized.engine = engine
        state_dict = read_state_dict(model_cfg.weights, weights_enum)
        try:
            model.load_state_dict(state_dict)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            source = model_cfg.weights or DEFAULT_WEIGHTS_FILE
            raise ModelError(f"model.weights: {source}: does not fit the quantized MobileNetV2 "
                             f"({first_line(exc)}); use torchvision's {DEFAULT_WEIGHTS_FILE} or "
                             f"a state_dict of torchvision.models.quantization.mobilenet_v2"
                             f"(quantize=True)") from None
    return model.eval(), list(weights_enum.meta["categories"])


# What makes the uncompiled model for a config and engine: build_mobilenet_v2, or a caller's own.
ModelBuilder = Callable[[ModelConfig, str], tuple[Any, list[str]]]


def _compile(model: Any) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.freeze(torch.jit.script(model))


def _load_torchscript(path: str) -> Any:
    import torch

    refuse_special_file(path, "model.torchscript")
    try:
        return torch.jit.load(path, map_location="cpu").eval()
    except FileNotFoundError:
        raise ModelError(f"model.torchscript: {path}: no such file; fix the path") from None
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"model.torchscript: {path}: not a loadable TorchScript model "
                         f"({first_line(exc)}); export it with torch.jit.save(torch.jit.script"
                         f"(model), path)") from None


def cache_key(model_cfg: ModelConfig, engine: str) -> CacheKey:
    import torch

    return CacheKey(model_cfg.name, engine, weights_identity(model_cfg), torch.__version__)


def _cached_or_built(model_cfg: ModelConfig, engine: str,
                     build: ModelBuilder) -> tuple[Any, list[str], str]:
    """The compiled model from the cache, else built (and cached); returns a description."""
    key = cache_key(model_cfg, engine)
    cache = ModelCache(Path(model_cfg.cache_dir) if model_cfg.cache_dir else default_cache_dir())
    path = cache.path_for(key)
    writable = True
    if cache.present(path):
        try:
            entry = cache.load(path, key)
            return entry.module, entry.meta["labels"], f"compiled cache {path}"
        except CacheUnusable as exc:
            writable = _discard(path, str(exc))
    try:
        model, labels = build(model_cfg, engine)
    except ModelError:
        # Without torchvision a cache from another torch release is the only way to run.
        for other in cache.other_torch_versions(key):
            try:
                entry = cache.load(other, key, any_torch=True)
            except CacheUnusable:
                continue
            log.warning("cannot build the model here; using %s, compiled by torch %s (running "
                        "%s)", other, entry.meta.get("torch"), key.torch)
            return entry.module, entry.meta["labels"], f"compiled cache {other}"
        raise
    compiled = _compile(model)
    if not writable:
        return compiled, labels, f"built from {model_cfg.weights or DEFAULT_WEIGHTS}"
    try:
        saved = cache.save(key, compiled, labels)
        log.info("model cache written: %s", saved)
    except OSError as exc:
        log.warning("cannot write the model cache in %s (%s); the next start will build the "
                    "model again", cache.directory, exc.strerror or exc)
    return compiled, labels, f"built from {model_cfg.weights or DEFAULT_WEIGHTS}"


def _discard(path: Path, reason: str) -> bool:
    """Remove an unusable entry so it is rebuilt; False if it must stay (it is then skipped)."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("model cache %s %s and cannot be removed (%s); building the model in memory "
                    "instead, on every start until it is removed or the cache directory is "
                    "writable", path, reason, exc.strerror or exc)
        return False
    log.warning("model cache %s %s; rebuilding it", path, reason)
    return True


def load_classifier(model_cfg: ModelConfig, inference_cfg: InferenceConfig, *,
                    build: ModelBuilder = build_mobilenet_v2) -> Classifier:
    """Load, compile (or take from cache), warm up and check the model against its labels.

    `build` makes the model when there is no usable compiled cache entry (callers that bring a
    model of their own, such as tests of the cache, pass theirs).

    The calling thread does this with one intra-op thread, so it never starts an OpenMP team
    (teams belong to the thread that starts them). A team's threads spin after each operator,
    so on a busy machine every operator waits for a descheduled spinner: loading and warming up
    from the cache took 0.4-1.8 s instead of 0.1 s on 2 cores. And with a second team beside
    the inference thread's, libgomp counts more threads than CPUs and puts them to sleep
    between operators: x86 at 2 threads took 5.9 ms per frame instead of 2.4. The inference
    thread, which sets its own thread count, owns the only team (docs/performance.md, Threads).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _load_classifier(model_cfg, inference_cfg, build)
    finally:
        torch.set_num_threads(threads)


def _load_classifier(model_cfg: ModelConfig, inference_cfg: InferenceConfig,
                     build: ModelBuilder) -> Classifier:
    import torch

    engine = select_engine(inference_cfg.engine)
    if engine == XNNPACK_ENGINE:
        return load_xnnpack(model_cfg, resolve_threads(inference_cfg.threads)[0])
    torch.backends.quantized.engine = engine
    if model_cfg.torchscript is not None:
        module: Any = _load_torchscript(model_cfg.torchscript)
        labels: list[str] = []
        description = f"TorchScript {model_cfg.torchscript}"
    elif inference_cfg.jit:
        module, labels, description = _cached_or_built(model_cfg, engine, build)
    else:
        module, labels = build(model_cfg, engine)
        description = f"eager model from {model_cfg.weights or DEFAULT_WEIGHTS}"
    torch.backends.quantized.engine = engine
    if model_cfg.labels is not None:
        labels = read_labels(model_cfg.labels)
    classifier = TorchClassifier(module, labels, engine, description)
    try:
        outputs = classifier.warm_up()
    except Exception as exc:  # noqa: BLE001 - a user's model may fail in any way
        source = model_cfg.torchscript or model_cfg.weights or DEFAULT_WEIGHTS
        raise ModelError(f"{source}: the model fails on a 1x3x224x224 input "
                         f"({first_line(exc)}); it must take one normalised RGB image") from None
    check_label_count(model_cfg, labels, outputs)
    return classifier

