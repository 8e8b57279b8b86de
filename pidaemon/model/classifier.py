"""Loading the classifier: engine choice, weights, TorchScript, labels and the compiled cache.

Every way the model can be wrong (missing, truncated or foreign weights, a broken TorchScript
file, a labels file that does not match) becomes one ModelError naming the file and the fix,
raised before the daemon reports READY.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pidaemon.config import InferenceConfig, ModelConfig
from pidaemon.errors import ModelError, first_line
from pidaemon.model.cache import CacheKey, CacheUnusable, ModelCache, default_cache_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger("pi-infer")

DEFAULT_WEIGHTS = "IMAGENET1K_QNNPACK_V1"  # torchvision's only pretrained quantized MobileNetV2
DEFAULT_WEIGHTS_FILE = "mobilenet_v2_qnnpack_37f702c5.pth"
WARMUP_RUNS = 3


def select_engine(requested: str) -> str:
    """`auto` means qnnpack on Arm (its kernels are tuned for it), x86 (or fbgemm) elsewhere."""
    import torch

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


class Classifier:
    """A loaded, warmed model with its labels; `top_k` maps an input tensor to predictions."""

    def __init__(self, module: Any, labels: list[str], engine: str, description: str) -> None:
        self.module = module
        self.labels = labels
        self.engine = engine
        self.description = description

    def top_k(self, batch: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
        """Class indices and softmax scores of the `k` best classes for a 1-image batch."""
        return self.top_k_batch(batch, k)[0]

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


def build_mobilenet_v2(model_cfg: ModelConfig, engine: str) -> tuple[Any, list[str]]:
    """torchvision's quantized MobileNetV2 with its weights, packed for `engine`."""
    import torch

    try:
        from torchvision.models.quantization import MobileNet_V2_QuantizedWeights, mobilenet_v2
    except Exception as exc:  # noqa: BLE001 - a broken torchvision raises many kinds
        raise ModelError(f"torchvision cannot be imported ({exc}); it is needed once to build the "
                         f"model: install the torchvision that matches torch "
                         f"{torch.__version__}") from None
    weights_enum = MobileNet_V2_QuantizedWeights[DEFAULT_WEIGHTS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The builder switches the engine to qnnpack; weights are packed for the engine that is
        # current at load_state_dict, so select ours in between.
        model = mobilenet_v2(weights=None, quantize=True)
        torch.backends.quantized.engine = engine
        state_dict = _read_state_dict(model_cfg.weights, weights_enum)
        try:
            model.load_state_dict(state_dict)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            source = model_cfg.weights or DEFAULT_WEIGHTS_FILE
            raise ModelError(f"model.weights: {source}: does not fit the quantized MobileNetV2 "
                             f"({first_line(exc)}); use torchvision's {DEFAULT_WEIGHTS_FILE} or "
                             f"a state_dict of torchvision.models.quantization.mobilenet_v2"
                             f"(quantize=True)") from None
    return model.eval(), list(weights_enum.meta["categories"])


def _read_state_dict(path: str | None, weights_enum: Any) -> Mapping[str, Any]:
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

    if model_cfg.weights is None:
        weights_id = DEFAULT_WEIGHTS
    else:
        weights_id = sha256_of(model_cfg.weights, "model.weights")[:16]
    return CacheKey(model_cfg.name, engine, weights_id, torch.__version__)


def _cached_or_built(model_cfg: ModelConfig, engine: str) -> tuple[Any, list[str], str]:
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
        model, labels = build_mobilenet_v2(model_cfg, engine)
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


def load_classifier(model_cfg: ModelConfig, inference_cfg: InferenceConfig) -> Classifier:
    """Load, compile (or take from cache), warm up and check the model against its labels.

    The calling thread does this with one intra-op thread, so it never starts an OpenMP team
    (teams belong to the thread that starts them). A team's threads spin after each operator,
    so on a busy machine every operator waits for a descheduled spinner: loading and warming up
    from the cache took 0.4-1.8 s instead of 0.1 s on 2 cores. And with a second team beside
    the inference thread's, libgomp counts more threads than CPUs and puts them to sleep
    between operators: x86 at 2 threads took 5.9 ms per frame instead of 2.4. The inference
    thread, which sets its own thread count, owns the only team (README, Performance).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _load_classifier(model_cfg, inference_cfg)
    finally:
        torch.set_num_threads(threads)


def _load_classifier(model_cfg: ModelConfig, inference_cfg: InferenceConfig) -> Classifier:
    import torch

    engine = select_engine(inference_cfg.engine)
    torch.backends.quantized.engine = engine
    if model_cfg.torchscript is not None:
        module: Any = _load_torchscript(model_cfg.torchscript)
        labels: list[str] = []
        description = f"TorchScript {model_cfg.torchscript}"
    elif inference_cfg.jit:
        module, labels, description = _cached_or_built(model_cfg, engine)
    else:
        module, labels = build_mobilenet_v2(model_cfg, engine)
        description = f"eager model from {model_cfg.weights or DEFAULT_WEIGHTS}"
    torch.backends.quantized.engine = engine
    if model_cfg.labels is not None:
        labels = read_labels(model_cfg.labels)
    classifier = Classifier(module, labels, engine, description)
    try:
        outputs = classifier.warm_up()
    except Exception as exc:  # noqa: BLE001 - a user's model may fail in any way
        source = model_cfg.torchscript or model_cfg.weights or DEFAULT_WEIGHTS
        raise ModelError(f"{source}: the model fails on a 1x3x224x224 input "
                         f"({first_line(exc)}); it must take one normalised RGB image") from None
    if len(labels) != outputs:
        source = model_cfg.labels or "the built-in labels"
        raise ModelError(f"model.labels: {source} has {len(labels)} labels but the model has "
                         f"{outputs} outputs; give a labels file with one line per output")
    return classifier

