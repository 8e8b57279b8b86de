"""The trained model: the daemon's frozen quantized MobileNetV2 features, then a small float head.

Features are the 1280 pooled values the ImageNet classifier reads, computed by the same quantized
network the daemon runs (so training and the daemon see the same numbers, and it runs on the
torch a Pi already has). The exported TorchScript file takes the daemon's input, a normalised
1x3x224x224 RGB batch, and returns one logit per label. It is scripted but not frozen: frozen
quantized weights stay packed for the engine they were built on, while a scripted model repacks
them for the engine of the machine that loads it (x86 here, qnnpack on a Pi).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pidaemon.config import Config
from pidaemon.cpus import resolve_threads
from pidaemon.model.classifier import build_mobilenet_v2, select_engine
from pidaemon.model.preprocess import Normalizer

FEATURES = 1280
BATCH = 16
EPOCHS = 300
LEARNING_RATE = 0.01
WEIGHT_DECAY = 1e-3


class Backbone(nn.Module):
    """Quantized MobileNetV2 up to its pooled features, dequantized to float."""

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.quant = net.quant
        self.features = net.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.quant(x))
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return torch.flatten(x.dequantize(), 1)


class LabelModel(nn.Module):
    """Backbone + head: what `model.torchscript` loads."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def load_backbone(config: Config) -> tuple[Backbone, str]:
    """The backbone from the config's weights (not its model.torchscript) and the engine.

    Torch uses inference.threads, as the daemon does (auto: the CPUs less one, so a daemon
    running beside it keeps a core): OpenMP threads that outnumber free cores spin and wait
    for each other, which made training three to ten times slower on a busy 2-core machine.
    """
    torch.set_num_threads(resolve_threads(config.inference.threads)[0])
    engine = select_engine(config.inference.engine)
    net, _ = build_mobilenet_v2(config.model, engine)
    torch.backends.quantized.engine = engine
    return Backbone(net).eval(), engine


def extract(backbone: Backbone, images: Iterable[np.ndarray],
            advance: Callable[[int], None]) -> torch.Tensor:
    """Features of 224x224 RGB images, a batch at a time (only one batch of views is ever in
    memory: 800 views would take 120 MB); `advance` is told each batch's size."""
    normalize = Normalizer()
    out = []
    stream = iter(images)
    with torch.inference_mode():
        while chunk := list(itertools.islice(stream, BATCH)):
            out.append(backbone(torch.cat([normalize(image) for image in chunk])))
            advance(len(chunk))
    return torch.cat(out) if out else torch.zeros(0, FEATURES)


def make_head(classes: int, hidden: int) -> nn.Module:
    if hidden == 0:
        return nn.Linear(FEATURES, classes)
    return nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(hidden, classes))


def train_head(features: torch.Tensor, targets: torch.Tensor, classes: int, hidden: int,
               seed: int) -> nn.Module:
    """Full-batch Adam on the features: a few hundred milliseconds for hundreds of views."""
    torch.manual_seed(seed)
    head = make_head(classes, hidden)
    optimizer = torch.optim.Adam(head.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    head.train()
    with torch.enable_grad():
        for _ in range(EPOCHS):
            optimizer.zero_grad()
            loss = F.cross_entropy(head(features), targets)
            loss.backward()
            optimizer.step()
    return head.eval()


def predict(head: nn.Module, features: torch.Tensor) -> list[int]:
    with torch.inference_mode():
        return head(features).argmax(-1).tolist()


def export(backbone: Backbone, head: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.script(LabelModel(backbone, head).eval())
