"""A reload's slow part, reading the config and loading a new model, in a thread of its own.

The main loop keeps answering signals meanwhile, so SIGTERM during a model load that takes
seconds still stops the daemon within 2 s: the load is abandoned (a daemon thread, and the
process exits without waiting for it). Whatever the load raises, an expected ConfigError or an
exception nobody foresaw, is kept for the main loop to report; the running configuration stays.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from pidaemon import config as config_module
from pidaemon.config import Config, Key, Reload
from pidaemon.errors import PiInferError, first_line
from pidaemon.eventlog import emit
from pidaemon.model.base import Classifier
from pidaemon.model.classifier import load_classifier
from pidaemon.model.regions import ModelLoader, load_models


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
