"""`regions:`: parts of the frame, each classified on its own and turned into a steady state.

The flat sections of config.schema declare fixed keys; here the keys are names the user chooses,
so they get their own reading and checks. A name becomes an MQTT topic level, a journal field
value and a Home Assistant component id, hence only [a-z0-9_].
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pidaemon.errors import ConfigError

Problem = Callable[[tuple[str, ...], str], ConfigError]

NAME = re.compile(r"[a-z0-9_]{1,64}")
UNKNOWN = "unknown"  # the state before the first steady result, and below min_score
MAX_CONSECUTIVE = 10000
MAX_HOLD = 86400.0
MAX_REGIONS = 32


@dataclass(frozen=True)
class RegionModel:
    """A region's own TorchScript classifier and its labels file."""

    torchscript: str
    labels: str


class Below(Enum):
    """What a result under min_score counts for."""

    KEEP = "keep"  # nothing: the last state stays
    UNKNOWN = "unknown"  # the state `unknown`


@dataclass(frozen=True)
class StateConfig:
    """When a region's results become a new state (pipeline.state applies it)."""

    min_score: float = 0.0
    min_scores: tuple[tuple[str, float], ...] = ()  # per label, overriding min_score
    consecutive: int = 1
    hold: float = 0.0
    below: Below = Below.KEEP

    def threshold(self, label: str) -> float:
        return dict(self.min_scores).get(label, self.min_score)


DEFAULT_STATE = StateConfig()


@dataclass(frozen=True)
class Region:
    name: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in fractions of the frame
    model: RegionModel | None = None  # None: the main model
    state: StateConfig = StateConfig()


def _number(value: Any, path: tuple[str, ...], problem: Problem, low: float,
            high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        shown = repr(value) if isinstance(value, str) else type(value).__name__
        raise problem(path, f"must be a number from {low:g} to {high:g}, got {shown}")
    if not low <= value <= high:
        raise problem(path, f"must be from {low:g} to {high:g}, got {value}")
    return float(value)


def _mapping(value: Any, path: tuple[str, ...], problem: Problem,
             keys: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise problem(path, f"must be a mapping of {', '.join(keys)}, got "
                            f"{type(value).__name__}")
    for key in value:
        if key not in keys:
            raise problem((*path, str(key)), f"unknown key; valid keys: {', '.join(keys)}")
    return value


def _box(value: Any, path: tuple[str, ...], problem: Problem) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != 4:
        raise problem(path, "must be [x1, y1, x2, y2], fractions of the frame from 0 to 1 "
                            "(e.g. [0.5, 0, 1, 0.5] for the top right quarter)")
    x1, y1, x2, y2 = (_number(v, path, problem, 0.0, 1.0) for v in value)
    if x2 <= x1 or y2 <= y1:
        raise problem(path, f"must have x2 > x1 and y2 > y1 (a box with an area), got "
                            f"{value}")
    return (x1, y1, x2, y2)


def _model(value: Any, path: tuple[str, ...], problem: Problem) -> RegionModel | None:
    data = _mapping(value, path, problem, ("torchscript", "labels"))
    if not data:
        return None
    for key in ("torchscript", "labels"):
        item = data.get(key)
        if not isinstance(item, str) or not item.strip():
            what = ("a file with one label per line, in the model's output order"
                    if key == "labels" else "a TorchScript model file")
            raise problem((*path, key), f"is required: {what}")
    return RegionModel(data["torchscript"], data["labels"])


def _state(value: Any, path: tuple[str, ...], problem: Problem) -> StateConfig:
    data = _mapping(value, path, problem, ("min_score", "consecutive", "hold", "below"))
    min_score, min_scores = DEFAULT_STATE.min_score, ()
    raw = data.get("min_score", DEFAULT_STATE.min_score)
    if isinstance(raw, dict):
        min_scores = tuple((str(label), _number(v, (*path, "min_score", str(label)), problem,
                                                0.0, 1.0)) for label, v in raw.items())
    else:
        min_score = _number(raw, (*path, "min_score"), problem, 0.0, 1.0)
    consecutive = data.get("consecutive", DEFAULT_STATE.consecutive)
    if isinstance(consecutive, bool) or not isinstance(consecutive, int) or not (
            1 <= consecutive <= MAX_CONSECUTIVE):
        raise problem((*path, "consecutive"), f"must be a whole number from 1 to "
                                              f"{MAX_CONSECUTIVE}, got {consecutive!r}")
    hold = _number(data.get("hold", DEFAULT_STATE.hold), (*path, "hold"), problem, 0.0, MAX_HOLD)
    raw_below = data.get("below", DEFAULT_STATE.below.value)
    try:
        below = Below(raw_below)
    except (ValueError, TypeError):
        raise problem((*path, "below"), f"must be keep or unknown, got {raw_below!r}") from None
    return StateConfig(min_score, min_scores, consecutive, hold, below)


def parse_regions(data: Any, problem: Problem) -> tuple[Region, ...]:
    """The `regions:` mapping as Regions, in file order; ConfigError naming the bad key."""
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise problem(("regions",), f"must be a mapping of region names to {{box: [x1, y1, "
                                    f"x2, y2]}}, got {type(data).__name__}")
    if len(data) > MAX_REGIONS:
        raise problem(("regions",), f"at most {MAX_REGIONS} regions, got {len(data)}")
    regions = []
    for name, value in data.items():
        path = ("regions", str(name))
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise problem(path, "names a region in MQTT topics, journal fields and Home "
                                "Assistant: use 1 to 64 of a-z, 0-9 and _ (e.g. garage_door)")
        if isinstance(value, list):  # the shorthand `door: [x1, y1, x2, y2]`
            regions.append(Region(name, _box(value, path, problem)))
            continue
        if value is None or (isinstance(value, dict) and "box" not in value):
            raise problem(path, "needs a box: [x1, y1, x2, y2] (`door: {box: [x1, y1, x2, "
                                "y2]}`, or the list alone: `door: [x1, y1, x2, y2]`)")
        entry = _mapping(value, path, problem, ("box", "model", "state"))
        regions.append(Region(name, _box(entry["box"], (*path, "box"), problem),
                              _model(entry.get("model"), (*path, "model"), problem),
                              _state(entry.get("state"), (*path, "state"), problem)))
    return tuple(regions)


def changed_regions(old: tuple[Region, ...], new: tuple[Region, ...]) -> list[tuple[str, bool]]:
    """Each added, removed or changed region's name, and whether its model changed."""
    before = {r.name: r for r in old}
    after = {r.name: r for r in new}
    changed = []
    for name in dict.fromkeys([*before, *after]):
        a, b = before.get(name), after.get(name)
        if a != b:
            changed.append((name, (a.model if a else None) != (b.model if b else None)))
    return changed


def as_plain(regions: tuple[Region, ...]) -> dict[str, dict[str, Any]]:
    """The regions as the YAML that would give them (for `check-config`)."""
    out: dict[str, dict[str, Any]] = {}
    for region in regions:
        state = region.state
        min_score: Any = dict(state.min_scores) if state.min_scores else state.min_score
        entry: dict[str, Any] = {"box": list(region.box)}
        if region.model is not None:
            entry["model"] = {"torchscript": region.model.torchscript,
                              "labels": region.model.labels}
        entry["state"] = {"min_score": min_score, "consecutive": state.consecutive,
                          "hold": state.hold, "below": state.below.value}
        out[region.name] = entry
    return out


# The keys of one region, for the generated docs: (key, default, meaning); the state's defaults
# are StateConfig's own.
REGION_KEYS = (
    ("box", "(required)", "[x1, y1, x2, y2] in fractions of the frame, 0 to 1 (x1 < x2, "
     "y1 < y2); the box is resized to the model input whole, stretched if not square."),
    ("model.torchscript", "null", "The region's own TorchScript model; null uses the main "
     "model. Regions sharing a model are classified in one batched call per frame."),
    ("model.labels", "null", "Its labels file, one per line in output order (required with "
     "model.torchscript)."),
    ("state.min_score", str(DEFAULT_STATE.min_score), "A result counts only with a top-1 score "
     "of at least this; a mapping such as {open: 0.8, closed: 0.6} sets it per label (other "
     "labels: 0)."),
    ("state.consecutive", str(DEFAULT_STATE.consecutive), "Identical results in a row before a "
     "label becomes the state."),
    ("state.hold", str(DEFAULT_STATE.hold), "Seconds a new label must keep winning before it "
     "becomes the state (like Home Assistant's delay_on)."),
    ("state.below", DEFAULT_STATE.below.value, "Below min_score: keep the last state, or "
     "unknown (the result counts for the state `unknown`)."),
)
