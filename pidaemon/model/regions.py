"""The classifiers regions use: the main model, and each distinct model a region names.

Regions that share a model share one loaded classifier (and one batched call per frame). A region
model's problems are reported under the region's key, before READY, like the main model's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from pidaemon.config import Config, InferenceConfig, ModelConfig
from pidaemon.config.regions import Region, RegionModel
from pidaemon.errors import ConfigError, ModelError
from pidaemon.model.base import Classifier
from pidaemon.model.classifier import load_classifier

Models = dict[RegionModel | None, Classifier]  # None: the main model
ModelLoader = Callable[[ModelConfig, InferenceConfig], Classifier]  # load_classifier's shape


def load_models(config: Config, main: Classifier, load: ModelLoader = load_classifier) -> Models:
    """`main` plus every region model of `config`, each loaded once by `load`; checks min_score
    labels."""
    models: Models = {None: main}
    try:
        for region in (r for feed in config.feeds() for r in feed.regions):
            if region.model is not None and region.model not in models:
                models[region.model] = _load_region_model(config, region, load)
            check_min_scores(region, models[region.model].labels)
    except BaseException:
        for key, classifier in models.items():
            if key is not None:
                classifier.close()  # an xnnpack region model's child process
        raise
    return models


def _load_region_model(config: Config, region: Region, load: ModelLoader) -> Classifier:
    assert region.model is not None
    model_cfg = dataclasses.replace(config.model, torchscript=region.model.torchscript,
                                    labels=region.model.labels, weights=None)
    try:
        return load(model_cfg, config.inference)
    except ModelError as exc:
        text, key = str(exc), f"regions.{region.name}.model"
        raise ModelError(key + text.removeprefix("model") if text.startswith("model.")
                         else f"{key}: {text}") from None


def check_min_scores(region: Region, labels: list[str]) -> None:
    """A per-label min_score must name one of the model's labels (a typo would never apply)."""
    known = set(labels)
    for label, _ in region.state.min_scores:
        if label not in known:
            raise ConfigError(f"regions.{region.name}.state.min_score.{label}: not a label of "
                              f"the region's model; use one of its labels file's lines")
