"""One camera of the pipeline: its capture thread, its queue, its regions and their states.

With `cameras:` there is one CameraFeed per named camera, each restarted, added or removed on
its own; with `camera:` there is one, without a name, and everything reads as before.
"""

from __future__ import annotations

import dataclasses

from pidaemon.config.regions import Region
from pidaemon.config.schema import CameraConfig, NamedCamera
from pidaemon.pipeline.capture import CaptureWorker
from pidaemon.pipeline.framequeue import DropOldestQueue
from pidaemon.pipeline.frames import Frame, Result
from pidaemon.pipeline.snapshot import Counters, SourceStatus, Stats
from pidaemon.pipeline.state import StateChange, SteadyState
from pidaemon.pipeline.tap import FrameTap
from pidaemon.sources import CameraState, FrameSource

JOIN_TIMEOUT = 1.5  # per thread; SIGTERM to exit stays under 2 s


class CameraFeed:
    def __init__(self, named: NamedCamera, source: FrameSource,
                 queue: DropOldestQueue[Frame], tap: FrameTap | None = None,
                 keep_images: bool = False) -> None:
        self.name = named.name
        self.tap = tap  # the live page's view of this camera, if it shows this one
        self.keep_images = keep_images  # collect: wants the model's input images
        self.queue = queue
        self.regions: tuple[Region, ...] = named.regions
        self.states = {r.name: SteadyState(r.name, r.state) for r in self.regions}
        self.capture = CaptureWorker(source, named.camera, queue, regions=self.regions,
                                     camera=self.name, tap=tap, keep_images=keep_images)
        self.retired = Counters()  # capture totals of this camera's earlier sources
        self.stats: Stats | None = None  # the latest window's
        self.last: Result | None = None

    def restart(self, source: FrameSource, config: CameraConfig) -> None:
        """A new source (or settings) for this camera alone; sequence numbers go on."""
        old = self.capture
        old.stop()
        old.join(JOIN_TIMEOUT)
        self.retired = self.retired + Counters(captured=old.captured, bad_frames=old.bad_frames)
        self.capture = CaptureWorker(source, config, self.queue, old.next_seq, self.regions,
                                     self.name, self.tap, self.keep_images)
        self.capture.start()

    def set_regions(self, regions: tuple[Region, ...]) -> None:
        """New boxes apply from the next frame; a kept region keeps its state."""
        states = {}
        for region in regions:
            states[region.name] = self.states.get(region.name) or SteadyState(region.name,
                                                                              region.state)
            states[region.name].config = region.state
        self.states = states
        self.regions = self.capture.regions = regions

    def state_changes(self, result: Result) -> list[StateChange]:
        changes = []
        states = self.states
        for region in result.regions:
            tracker = states.get(region.name)
            change = tracker.update(region, result.captured_at) if tracker else None
            if change is not None:
                changes.append(change if self.name is None
                               else dataclasses.replace(change, camera=self.name))
        return changes

    def counters(self, processed: int, failed: int) -> Counters:
        capture = self.capture
        return self.retired + Counters(captured=capture.captured, processed=processed,
                                       dropped=self.queue.dropped, bad_frames=capture.bad_frames,
                                       failed_frames=failed)

    def source_status(self) -> SourceStatus:
        capture = self.capture
        return SourceStatus(str(capture.config.device), capture.state, capture.status,
                            capture.source.grant)

    @property
    def attempted(self) -> bool:
        return self.capture.state is not CameraState.STARTING
