"""Steady states: a region's stream of top-1 results turned into a state that changes rarely.

A result counts for its label when its score reaches the region's min_score (per label if
given); below it, it counts for `unknown` (below: unknown) or not at all (below: keep). A new
label becomes the state once it has won `consecutive` results in a row and for `hold` seconds
since its first win, like Home Assistant's delay_on; anything else in between starts it over.
So a label that flickers frame by frame never becomes a state, and each change is reported once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pidaemon.config.regions import UNKNOWN, Below, StateConfig
from pidaemon.pipeline.frames import RegionResult


@dataclass(frozen=True)
class StateChange:
    region: str
    state: str
    previous: str
    score: float  # the top-1 score of the result that made the change
    scores: dict[str, float]  # that result's top-k, label to score
    since: float  # Unix time of the change
    camera: str | None = None  # the name in `cameras:`; None for the single `camera:`

    @property
    def topic(self) -> str:
        """As RegionInfo.topic: `gate`, or `garden/gate` with cameras."""
        return self.region if self.camera is None else f"{self.camera}/{self.region}"


class SteadyState:
    """One region's state; `update` returns a StateChange when the state changes."""

    def __init__(self, region: str, config: StateConfig) -> None:
        self.region = region
        self.config = config  # a reload may replace it; the state is kept
        self.state = UNKNOWN
        self.since: float | None = None
        self._candidate: str | None = None
        self._count = 0
        self._first_seen = 0.0

    def update(self, result: RegionResult, at: float) -> StateChange | None:
        """Feed one result; `at` is when its frame was captured (monotonic seconds)."""
        if not result.classes:
            return None
        label, score = result.label, result.scores[0]
        if score < self.config.threshold(label):
            if self.config.below is Below.KEEP:
                self._candidate = None  # a doubtful result breaks a run
                return None
            label = UNKNOWN
        if label == self.state:
            self._candidate = None
            return None
        if label != self._candidate:
            self._candidate, self._count, self._first_seen = label, 0, at
        self._count += 1
        if self._count < self.config.consecutive or at - self._first_seen < self.config.hold:
            return None
        previous, self.state, self._candidate = self.state, label, None
        self.since = time.time()
        scores = {result.labels[c]: round(s, 4)
                  for c, s in zip(result.classes, result.scores, strict=True)}
        return StateChange(self.region, label, previous, round(score, 4), scores, self.since)
