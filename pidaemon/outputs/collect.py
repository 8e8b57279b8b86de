"""collect: keeping examples on disk for `pi-infer train`, on a thread of its own.

The Collector decides which images to keep (every `interval` seconds, when the top score is
below `min_score_below`, and at a state change a caller reports) and writes them as
`<label>_<score>_<time>.jpg`, so a user can sort them into one folder per label. It takes any
RGB image with its label and score, under an optional folder name: the whole frame here, a
region's crop where regions are classified. Writes are atomic (temporary file, rename), each
folder keeps at most `max_files` of its own files (the oldest go), and a full or read-only disk
is a warning at most once a minute, never an error: collecting must not stop the daemon.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from pidaemon.config import CollectConfig, Config
from pidaemon.eventlog import emit
from pidaemon.pipeline.framequeue import DropOldestQueue, QueueClosed
from pidaemon.pipeline.frames import Result
from pidaemon.pipeline.sink import Sink
from pidaemon.pipeline.state import StateChange

LOW_SCORE_GAP = 1.0  # seconds between saves of low-score frames
# Mean absolute difference (0-255) of 32x32 grey thumbnails above which an image is new enough to
# keep: noise and JPEG flicker of a still scene stay under it, a moved object goes over it.
DISTINCT = 6.0
STALE_INTERVALS = 10  # an unchanged scene is still kept this many intervals apart
WARN_EVERY = 60.0
QUEUE = 4  # images waiting to be written; the oldest is dropped if the disk is that slow
JPEG_QUALITY = 95
# Only files named like this are counted against the cap and removed: never a user's own.
OURS = re.compile(r"^[\w.-]+_[01]\.\d\d_\d{8}-\d{6}\.\d{3}\.jpg$")


def file_name(label: str, score: float, when: float) -> str:
    """`military-uniform_0.43_20261130-041500.123.jpg`: sorts by label, then score, then time."""
    safe = re.sub(r"[^\w.-]+", "-", label).strip("-.") or "unlabelled"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    return f"{safe}_{min(max(score, 0.0), 1.0):.2f}_{stamp}.{int(when * 1000) % 1000:03d}.jpg"


class Collector:
    """Chooses and writes examples; `offer` is cheap and never blocks on the disk."""

    def __init__(self, config: CollectConfig) -> None:
        assert config.directory is not None
        self.directory = Path(config.directory)
        self.config = config
        self.saved = 0
        self.failed = 0
        self._last: dict[str, float] = {}  # folder -> monotonic time of its last save
        self._thumbs: dict[str, np.ndarray] = {}  # folder -> its last saved image, small
        self._queue: DropOldestQueue[tuple[str, str, np.ndarray]] = DropOldestQueue(QUEUE)
        self._kept: dict[str, deque[Path]] = {}  # folder -> its files, oldest first
        self._warned_at = -WARN_EVERY
        self._thread = threading.Thread(target=self._run, name="collect", daemon=True)

    def start(self) -> None:
        emit("collect", f"collect: saving frames to {self.directory} every "
             f"{self.config.interval:g} s (keeping {self.config.max_files})",
             directory=str(self.directory))
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._queue.close()
        self._thread.join(timeout)

    def offer(self, label: str, score: float, image: np.ndarray, folder: str = "",
              changed: bool = False) -> bool:
        """Keep `image` (224x224 RGB) if it is due; returns whether it was queued.

        Due: at a state change, for a low score (at most once a second), or once `interval`
        has passed and the image differs from the last one kept (a camera watching an unchanged
        scene would otherwise fill the folder with copies); an unchanged scene is still kept
        every STALE_INTERVALS intervals.
        """
        now = time.monotonic()
        since = now - self._last.get(folder, -float("inf"))
        low = score < self.config.min_score_below and since >= LOW_SCORE_GAP
        due = since >= self.config.interval
        thumb = _thumbnail(image)
        kept = self._thumbs.get(folder)
        distinct = kept is None or float(np.abs(thumb - kept).mean()) >= DISTINCT
        if not (changed or low or (due and (distinct
                                            or since >= STALE_INTERVALS * self.config.interval))):
            return False
        self._last[folder] = now
        self._thumbs[folder] = thumb
        try:
            self._queue.put((folder, file_name(label, score, time.time()), image))
        except QueueClosed:
            return False
        return True

    # -- the writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except QueueClosed:
                return
            if item is not None:
                self._write(*item)

    def _write(self, folder: str, name: str, image: np.ndarray) -> None:
        target_dir = self.directory / folder if folder else self.directory
        tmp = target_dir / f".{name}.tmp"
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            kept = self._kept_in(folder, target_dir)
            ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise OSError("the JPEG encoder refused the image")
            with open(tmp, "wb") as f:
                f.write(data.tobytes())
            os.replace(tmp, target_dir / name)
        except (OSError, cv2.error) as exc:
            self._remove(tmp)
            self._failed(target_dir, exc)
            return
        self.saved += 1
        kept.append(target_dir / name)
        while len(kept) > self.config.max_files:
            try:
                kept.popleft().unlink(missing_ok=True)
            except OSError as exc:
                self._failed(target_dir, exc)
                break

    @staticmethod
    def _remove(tmp: Path) -> None:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself is unusable; the warning says so

    def _kept_in(self, folder: str, target_dir: Path) -> deque[Path]:
        """The folder's own files, oldest first, read once (they survive restarts)."""
        if folder not in self._kept:
            found = [p for p in target_dir.iterdir() if OURS.match(p.name) and p.is_file()]
            found.sort(key=lambda p: (p.stat().st_mtime, p.name))
            self._kept[folder] = deque(found)
        return self._kept[folder]

    def _failed(self, target_dir: Path, exc: BaseException) -> None:
        self.failed += 1
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY:
            return
        self._warned_at = now
        reason = getattr(exc, "strerror", None) or str(exc)
        emit("collect", f"collect: cannot save to {target_dir} ({reason}); {self.failed} "
             f"frame(s) not saved so far; check that the disk has space and the service may "
             f"write there (warned at most once a minute)", logging.WARNING,
             directory=str(target_dir), failed=self.failed)


class CollectSink(Sink):
    """Offers each classified image to a Collector: the whole frame under its top-1 label, or
    each region's crop in a folder of its own (`<camera>/<region>` with several cameras), and a
    region's crop again when its steady state changes."""

    def __init__(self, config: CollectConfig) -> None:
        self.collector = Collector(config)
        self._last: dict[str, tuple[float, np.ndarray]] = {}  # folder -> latest crop

    def start(self) -> None:
        self.collector.start()

    def stop(self) -> None:
        self.collector.stop()

    def reconfigure(self, config: Config) -> None:
        self.collector.config = config.collect  # interval, min_score_below, max_files

    def on_result(self, result: Result, labels: list[str]) -> None:
        if not result.images:
            return
        if not result.regions:
            if result.classes:
                self.collector.offer(labels[result.classes[0]], result.scores[0],
                                     result.images[0], _folder(result.camera, ""))
            return
        for region, image in zip(result.regions, result.images, strict=False):
            if region.classes:
                folder = _folder(result.camera, region.name)
                self._last[folder] = (region.scores[0], image)
                self.collector.offer(region.label, region.scores[0], image, folder)

    def on_state(self, change: StateChange) -> None:
        folder = _folder(change.camera, change.region)
        if folder in self._last:
            score, image = self._last[folder]
            self.collector.offer(change.state, score, image, folder, changed=True)


def _folder(camera: str | None, region: str) -> str:
    return "/".join(part for part in (camera, region) if part)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
