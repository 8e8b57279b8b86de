"""Several cameras in one Pipeline, in-process: fair under overload, batched or not, and a
missing camera that holds back neither the others nor the watchdog's view."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from pidaemon.config import CameraConfig, Config, OutputConfig
from pidaemon.config.schema import NamedCamera
from pidaemon.pipeline import Pipeline
from pidaemon.sources import CameraState, FrameSource

from .conftest import EXPECTED
from .fakes import PhotoCamera, Recorder, SlowModel, wait_until

PHOTOS = {"door": "coffee.png", "yard": "bird.bmp", "shed": "chelsea.png"}


def named(*names: str) -> Config:
    return Config(output=OutputConfig(interval=0.2), cameras=tuple(
        NamedCamera(name, CameraConfig(device=f"photo:{name}")) for name in names))


class MissingCamera(FrameSource):
    def open(self) -> None:
        raise OSError("no such device")

    def read(self):  # pragma: no cover - never opened
        return False, None

    def release(self) -> None:
        pass


@pytest.mark.parametrize("batch", [False, True])
def test_three_cameras_under_overload_each_get_their_share(classifier, running, batch):
    # 3 cameras at 36 fps; the model manages at most 40 frames a second (25 ms a frame).
    model = SlowModel(classifier, delay=0.025)
    recorder = Recorder()
    pipeline = Pipeline(model, named(*PHOTOS), {n: PhotoCamera(p, fps=36)
                                                for n, p in PHOTOS.items()}, [recorder])
    pipeline.settings.batch.forced = batch
    running(pipeline)
    wait_until(lambda: len(recorder.results) >= 20)
    start = len(recorder.results)
    time.sleep(3)
    window = recorder.results[start:]
    shares = Counter(r.camera for r in window)
    assert set(shares) == set(PHOTOS), shares
    for camera, count in shares.items():
        assert count >= 0.30 * len(window), f"{camera}: {count} of {len(window)}: {shares}"
    for result in window:  # each result is its own camera's photo
        assert result.classes[0] in EXPECTED[PHOTOS[result.camera]], result
    assert pipeline.counters().dropped > 0  # overloaded indeed: the freshest frames won


def test_a_missing_camera_holds_back_neither_the_others_nor_liveness(classifier, running):
    recorder = Recorder()
    pipeline = Pipeline(classifier, named("door", "gone"),
                        {"door": PhotoCamera("coffee.png", fps=20), "gone": MissingCamera("x")},
                        [recorder])
    running(pipeline)
    pipeline.wait_for_capture_attempt(5)
    wait_until(lambda: len(recorder.results) >= 10 and len(recorder.snapshots) >= 3)
    assert {r.camera for r in recorder.results} == {"door"}
    assert pipeline.feeds["gone"].capture.state is CameraState.WAITING
    assert pipeline.alive(5.0) and len(pipeline.workers) == 4  # both capture threads watched
    whole = [s for s in recorder.snapshots if s.cameras][-1]
    assert [part.camera for part in whole.cameras] == ["door", "gone"]
    assert whole.status.startswith("door ") and " fps espresso · gone waiting for photo:gone" in \
        whole.status, whole.status
    per_camera = [s for s in recorder.snapshots if s.camera == "door"]
    assert per_camera and per_camera[-1].stats.counters.processed > 0


def test_set_cameras_reopens_only_the_changed_one_and_removes_one(classifier, running):
    import dataclasses

    recorder = Recorder()
    config = named("door", "yard")
    made: list[PhotoCamera] = []

    def make_source(camera: CameraConfig) -> FrameSource:
        made.append(PhotoCamera(PHOTOS["door"]))
        return made[-1]

    pipeline = running(Pipeline(classifier, config, {"door": PhotoCamera(PHOTOS["door"]),
                                                     "yard": PhotoCamera(PHOTOS["yard"])},
                                [recorder]))
    wait_until(lambda: {r.camera for r in recorder.results} == {"door", "yard"})
    door, yard = pipeline.feeds["door"].capture, pipeline.feeds["yard"].capture
    changed = dataclasses.replace(config, cameras=(
        dataclasses.replace(config.cameras[0], camera=CameraConfig(device="photo:door", fps=20)),
        config.cameras[1]))
    pipeline.set_cameras(changed, make_source, {"door"})
    assert pipeline.feeds["yard"].capture is yard and yard.is_alive()
    assert pipeline.feeds["door"].capture is not door and not door.is_alive()
    assert pipeline.feeds["door"].capture.next_seq > 1  # sequence numbers go on
    pipeline.set_cameras(named("door"), make_source, set())
    assert list(pipeline.feeds) == ["door"] and not yard.is_alive()
    mark = len(recorder.results)
    wait_until(lambda: len(recorder.results) >= mark + 10)
    assert {r.camera for r in recorder.results[mark + 3:]} == {"door"}
    assert len(made) == 1 and pipeline.counters().captured > 0
