"""Lowering the quantized MobileNetV2 to an XNNPACK int8 ExecuTorch program (`.pte`).

torchvision's quantized MobileNetV2 was trained with fake quantization (QAT), so its state_dict
already holds every activation's scale and zero point. Instead of calibrating on sample images,
the export carries those over: the float model gets the dequantized weights, `torch.export` and
PT2E insert observers as XNNPACK wants them, and each activation observer is replaced by one
fixed to the QAT value (int8 zero point = uint8 zero point - 128, same scale), and each
weight observer to the QAT weight scale, so the int8 weights are exactly the trained ones.

This needs the exporter (executorch, torchao, torchvision); running the result needs only torch
and executorch's runtime bindings (see runtime.py).
"""

from __future__ import annotations

import importlib.resources
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pidaemon.errors import first_line
from pidaemon.model.files import write_atomically

if TYPE_CHECKING:
    import torch

INPUT_SHAPE = (1, 3, 224, 224)
_SHARED_QPARAMS_OPS = ("adaptive_avg_pool2d", "flatten", "dropout", "view", "reshape",
                       "mean")


def float_mobilenet_v2(state_dict: Mapping[str, Any]) -> torch.nn.Module:
    """torchvision's quantizable MobileNetV2, fused, with the quantized weights dequantized."""
    from torchvision.models.quantization import mobilenet_v2

    model = mobilenet_v2(weights=None, quantize=False).eval()
    model.fuse_model(is_qat=False)
    weights = {}
    for key in model.state_dict():
        prefix, leaf = key.rsplit(".", 1)
        if prefix == "classifier.1":
            weight, bias = state_dict["classifier.1._packed_params._packed_params"]
            value = weight if leaf == "weight" else bias
        else:
            value = state_dict[f"{_quantized_owner(prefix, state_dict)}.{leaf}"]
        weights[key] = value.dequantize() if value.is_quantized else value.detach()
    model.load_state_dict(weights)
    return model


def _quantized_owner(prefix: str, state_dict: Mapping[str, Any]) -> str:
    """`features.0.0.0` (a conv inside a fused ConvReLU) -> `features.0.0`, the quantized module
    that holds its output's scale."""
    path = prefix
    while path:
        if f"{path}.scale" in state_dict:
            return path
        path = path.rpartition(".")[0]
    raise KeyError(f"no quantized module owns {prefix}")


def _weight_qparams(node: Any, state_dict: Mapping[str, Any]) -> tuple[float, int]:
    """The QAT (scale, zero point) of the weight that get_attr `node` reads."""
    prefix = node.target.rsplit(".", 1)[0]
    if prefix == "classifier.1":
        weight = state_dict["classifier.1._packed_params._packed_params"][0]
    else:
        weight = state_dict[f"{_quantized_owner(prefix, state_dict)}.weight"]
    return float(weight.q_scale()), int(weight.q_zero_point())


def _activation_qparams(node: Any, state_dict: Mapping[str, Any],
                        fixed: dict[str, tuple[float, int]]) -> tuple[float, int]:
    """The QAT (scale, int8 zero point) of the activation that `node` produces."""
    if node.op == "placeholder":
        owner = "quant"
    elif any(op in str(node.target) for op in _SHARED_QPARAMS_OPS):
        # Pooling and reshapes keep their input's quantization in the QAT model too.
        source = node.args[0]
        while source.op == "call_module":  # the input's own observer
            source = source.args[0]
        return fixed.get(source.name) or _activation_qparams(source, state_dict, fixed)
    else:
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        if "add" in str(node.target):
            owner = f"{path}.skip_add"
        else:
            owner = _quantized_owner(path, state_dict)
    scale = float(state_dict[f"{owner}.scale"])
    zero_point = int(state_dict[f"{owner}.zero_point"]) - 128
    return scale, zero_point


def carry_over_qparams(prepared: Any, state_dict: Mapping[str, Any]) -> int:
    """Fix every observer of a PT2E-prepared MobileNetV2 (per-tensor config) to the QAT
    qparams, so the int8 weights and activations are the QAT model's; returns how many."""
    import torch
    from torchao.quantization.pt2e.observer import FixedQParamsObserver

    fixed: dict[str, tuple[float, int]] = {}
    for node in prepared.graph.nodes:
        if node.op != "call_module" or "activation_post_process" not in str(node.target):
            continue
        observer = getattr(prepared, node.target)
        source = node.args[0]
        if source.op == "get_attr":
            scale, zero_point = _weight_qparams(source, state_dict)
            qscheme, quant_min = torch.per_tensor_symmetric, -128
        else:
            scale, zero_point = _activation_qparams(source, state_dict, fixed)
            qscheme, quant_min = torch.per_tensor_affine, observer.quant_min
        fixed[source.name] = (scale, zero_point)
        setattr(prepared, node.target, FixedQParamsObserver(
            scale, zero_point, dtype=observer.dtype, qscheme=qscheme, quant_min=quant_min,
            quant_max=observer.quant_max))
    return len(fixed)


def quantize_for_xnnpack(model: torch.nn.Module, state_dict: Mapping[str, Any] | None = None,
                         calibration: list[torch.Tensor] | None = None) -> Any:
    """The PT2E-quantized graph of `model`: QAT qparams carried over from `state_dict`, or
    observed on `calibration` batches (what a float model would need; pi-infer has no key for
    calibration images yet, so the loader refuses float models)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = (torch.zeros(INPUT_SHAPE),)
    graph = torch.export.export(model, example).module()
    # Per tensor, as the QAT weights are; calibrated models are better off per channel.
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=state_dict is None))
    prepared = prepare_pt2e(graph, quantizer)
    if state_dict is not None:
        carry_over_qparams(prepared, state_dict)
    for batch in calibration or [torch.zeros(INPUT_SHAPE)]:
        prepared(batch)  # weight observers need one call; activations observe here if not fixed
    return convert_pt2e(prepared)


def use_bundled_flatc() -> None:
    """executorch serialises programs with the `flatc` tool its wheel ships (executorch/data/bin)
    but looks for it on PATH, which under systemd (or pip --target) lacks the venv's bin/."""
    if os.environ.get("FLATC_EXECUTABLE"):
        return
    try:
        bundled = importlib.resources.files("executorch.data.bin") / "flatc"
    except ModuleNotFoundError:
        return
    if bundled.is_file():
        os.environ["FLATC_EXECUTABLE"] = str(bundled)


def lower_to_pte(quantized: Any) -> bytes:
    """The XNNPACK-delegated ExecuTorch program of a quantized graph, serialised."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    use_bundled_flatc()
    example = (torch.zeros(INPUT_SHAPE),)
    exported = torch.export.export(quantized, example)
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    return edge.to_executorch().buffer


def export_mobilenet_v2(state_dict: Mapping[str, Any], target: Path) -> Path:
    """Write the XNNPACK int8 program of the quantized MobileNetV2 weights to `target`
    atomically (a power cut never leaves a torn file)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = float_mobilenet_v2(state_dict)
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
            raise WeightsMismatch(first_line(exc)) from None
        program = lower_to_pte(quantize_for_xnnpack(model, state_dict))
    return write_atomically(target, lambda f: f.write(program))


class WeightsMismatch(Exception):
    """The state_dict is not torchvision's quantized MobileNetV2's."""
