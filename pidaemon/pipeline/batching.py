"""Whether frames of several cameras go through the model as one batch: measured, not assumed.

A batch saves per-call overhead but may cost more per image (qnnpack on x86 gains nothing; the
bench shows each engine). So the inference thread tries both ways on real frames, alternating,
for the first rounds where several frames are ready, and keeps the faster per frame. A new model
is measured again. Nothing is spent on it with one camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pidaemon.eventlog import emit

TRIALS = 6  # rounds of each way before deciding
MARGIN = 0.95  # batching must save 5% per frame: a tie keeps the simpler way


@dataclass
class BatchChooser:
    forced: bool | None = None  # the bench forces each way; None: measure
    decided: bool | None = None
    _times: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})

    def reset(self) -> None:
        """A new model: measure again."""
        self.decided = None
        self._times = {True: [], False: []}

    def batch_now(self) -> bool:
        if self.forced is not None:
            return self.forced
        if self.decided is not None:
            return self.decided
        return len(self._times[True]) <= len(self._times[False])

    def record(self, batched: bool, frames: int, seconds: float) -> None:
        """One round of `frames` frames (at least 2) that took `seconds` in the model."""
        if self.forced is not None or self.decided is not None:
            return
        self._times[batched].append(seconds / frames)
        if min(len(t) for t in self._times.values()) < TRIALS:
            return
        batched_ms, single_ms = (1000 * sorted(t)[len(t) // 2] for t in
                                 (self._times[True], self._times[False]))
        self.decided = batched_ms < MARGIN * single_ms
        way = "one batched call" if self.decided else "one call per frame"
        emit("inference", f"inference: frames of several cameras take {batched_ms:.1f} ms per "
             f"frame batched, {single_ms:.1f} ms one by one; using {way}",
             batched=self.decided, batched_ms=round(batched_ms, 2),
             single_ms=round(single_ms, 2))
