"""The pipeline: capture -> drop-oldest queue -> inference -> results, owned by one Pipeline."""

from pidaemon.pipeline.frames import Frame, Result
from pidaemon.pipeline.pipeline import Pipeline
from pidaemon.pipeline.snapshot import Counters, Snapshot, Stats

__all__ = ["Counters", "Frame", "Pipeline", "Result", "Snapshot", "Stats"]
