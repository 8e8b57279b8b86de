"""A reload: its slow part (read the config, load a new model) in a thread of its own, then
each changed key applied to the running pipeline as its declaration says.

The main loop keeps answering signals meanwhile, so SIGTERM during a model load that takes
seconds still stops the daemon within 2 s: the load is abandoned (a daemon thread, and the
process exits without waiting for it). Whatever the load or the apply raises, an expected
ConfigError or an exception nobody foresaw, is logged; the running configuration stays.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from pidaemon import config as config_module
from pidaemon.config import Config, Key, Reload
from pidaemon.errors import PiInferError, first_line
from pidaemon.eventlog import emit
from pidaemon.model.base import Classifier
from pidaemon.model.classifier import load_classifier
from pidaemon.model.regions import ModelLoader, check_min_scores, load_models
from pidaemon.pipeline import Pipeline
from pidaemon.sources import SourceFactory


@dataclass(frozen=True)
class Prepared:
    """A new configuration, what changed, and the new models (main and per region) if model
    keys changed."""

    config: Config
    changed: list[Key]
    classifier: Classifier | None
    models: dict[str | None, Classifier] | None


class ReloadJob(threading.Thread):
    """Prepares one reload; `wake` is set when it is done, successful or not."""

    def __init__(self, current: Config, path: Path | None, source: str | None,
                 wake: threading.Event, load_model: ModelLoader = load_classifier) -> None:
        super().__init__(name="reload", daemon=True)
        self.current = current
        self.path = path
        self.source = source
        self.wake = wake
        self.load_model = load_model
        self.prepared: Prepared | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            new = config_module.load(self.path).with_source(self.source)
            changed = config_module.changed_keys(self.current, new)
            classifier = models = None
            if any(key.on_reload is Reload.MODEL for key in changed):
                emit("model", "model: loading the model for the reload", state="loading")
                classifier = self.load_model(new.model, new.inference)
                try:
                    models = load_models(new, classifier, self.load_model)
                except BaseException:
                    classifier.close()  # the xnnpack engine's child process
                    raise
            self.prepared = Prepared(new, changed, classifier, models)
        except BaseException as exc:  # noqa: BLE001 - reported by the main loop, never fatal
            self.error = exc
        finally:
            self.wake.set()


def describe_failure(exc: BaseException) -> str:
    """One line for a failed reload: our own errors as they are, others with their type."""
    if isinstance(exc, PiInferError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {first_line(exc)}"


def finish_reload(job: ReloadJob, pipeline: Pipeline, make_source: SourceFactory) -> Config | None:
    """Apply what `job` prepared to the running pipeline: the new config, or None when the
    reload failed (logged at error priority; the running configuration stays)."""
    error = job.error
    if error is None and job.prepared is not None:
        try:
            _apply(job.prepared, pipeline, make_source)
        except Exception as exc:  # noqa: BLE001 - a reload never ends the daemon
            error = exc
    if error is not None or job.prepared is None:
        error = error or RuntimeError("the reload ended without a result")
        emit("reload", f"reload failed, keeping the running configuration: "
             f"{describe_failure(error)}", logging.ERROR,
             error=type(error).__name__, reason=first_line(error))
        return None
    new, changed = job.prepared.config, job.prepared.changed
    sections = list(dict.fromkeys(k.section for k in changed if k.on_reload is not Reload.RESTART))
    what = ", ".join(sections) if sections else "nothing changed"
    emit("reload", f"reload: configuration applied ({what})", changed=",".join(sections))
    return new


def _apply(prepared: Prepared, pipeline: Pipeline, make_source: SourceFactory) -> None:
    """Apply each changed key as its declaration says (config.schema.Reload)."""
    new, changed = prepared.config, prepared.changed
    scopes = {key.on_reload for key in changed}
    waiting = [key.path for key in changed if key.on_reload is Reload.RESTART]
    if waiting:
        emit("reload", f"reload: {', '.join(waiting)} take effect at the next restart",
             logging.WARNING)
    if prepared.classifier is not None and prepared.models is not None:
        classifier = prepared.classifier
        pipeline.swap_models(prepared.models)
        emit("model", f"model: reloaded {classifier.description}, engine {classifier.engine}")
    else:  # the region models are the ones loaded: check min_score labels against them
        for region in (r for feed in new.feeds() for r in feed.regions):
            check_min_scores(region, pipeline.models[region.model].labels)
    if Reload.CAMERA in scopes:  # first, so that new cameras get their regions below
        reopen = {None if key.section == "camera" else key.name for key in changed
                  if key.on_reload is Reload.CAMERA}
        pipeline.set_cameras(new, make_source, reopen)
    pipeline.apply_live(new)
