"""The Pipeline in-process: real model, real threads and queues, sources that serve real photos.

The sources are tests.fakes' FrameSources (a paced photo camera, one that breaks); the model is
the real quantized MobileNetV2, wrapped where a test needs it slow or hung.
"""

from __future__ import annotations

import time

import pytest

from pidaemon.config import Config, OutputConfig, parse
from pidaemon.errors import WorkerFailed
from pidaemon.pipeline import Pipeline
from pidaemon.sources import CameraState

from .conftest import EXPECTED
from .fakes import BrokenCamera, PhotoCamera, Recorder, SlowModel, wait_until

CONFIG = Config(output=OutputConfig(interval=0.2))


def test_frames_flow_to_labels_and_stop_leaves_no_thread(classifier, running):
    recorder = Recorder()
    pipeline = running(Pipeline(classifier, CONFIG, PhotoCamera("coffee.png"), [recorder]))
    wait_until(lambda: len(recorder.results) >= 5 and recorder.snapshots)
    pipeline.stop()
    assert not any(worker.is_alive() for worker in pipeline.workers)
    assert {r.classes[0] for r in recorder.results} <= EXPECTED["coffee.png"]
    seqs = [r.seq for r in recorder.results]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    snapshot = recorder.snapshots[-1]
    assert snapshot.sources[0].state is CameraState.STREAMING
    assert snapshot.model.engine == classifier.engine and len(snapshot.model.labels) == 1000
    assert snapshot.stats.label == "espresso" and snapshot.status.startswith(
        f"{snapshot.stats.fps:.1f} fps")
    counters = pipeline.counters()
    assert counters.processed == len(recorder.results)
    accounted = counters.processed + counters.dropped + len(pipeline.frames)
    # The frame read as the queue closed is counted as captured and never queued.
    assert 0 <= counters.captured - accounted <= 1


def test_counters_and_sequence_go_on_across_capture_restarts(classifier, running):
    recorder = Recorder()
    first = PhotoCamera("coffee.png")
    pipeline = running(Pipeline(classifier, CONFIG, first, [recorder]))
    wait_until(lambda: len(recorder.results) >= 3)
    old = pipeline.capture
    pipeline.restart_capture(PhotoCamera("bird.bmp"), CONFIG.camera)
    assert not old.is_alive() and pipeline.capture is not old
    wait_until(lambda: any(r.classes[0] in EXPECTED["bird.bmp"] for r in recorder.results))
    pipeline.stop()
    assert pipeline.counters().captured == old.captured + pipeline.capture.captured
    seqs = [r.seq for r in recorder.results]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "numbers never restart"


def test_a_hung_model_is_seen_as_not_alive_and_recovers(classifier, running):
    model = SlowModel(classifier)
    pipeline = running(Pipeline(model, CONFIG, PhotoCamera("coffee.png"), [Recorder()]))
    wait_until(lambda: pipeline.inference.processed >= 2)
    assert pipeline.alive(window=5.0)
    model.running.clear()
    wait_until(lambda: not pipeline.alive(window=0.5), timeout=10)
    stale = [w.name for w in pipeline.workers if w.stale_for(time.monotonic()) >= 0.5]
    assert stale == ["inference"], "capture and results keep beating"
    model.running.set()
    wait_until(lambda: pipeline.alive(window=0.5), timeout=10)


def test_a_slow_model_gets_the_freshest_frames(classifier, running):
    """50 fps into a model held to >= 0.1 s per frame: frames are dropped, never queued up."""
    recorder = Recorder()
    model = SlowModel(classifier, delay=0.1)
    pipeline = running(Pipeline(model, CONFIG, PhotoCamera("coffee.png", fps=50), [recorder]))
    wait_until(lambda: len(recorder.results) >= 8)
    pipeline.stop()
    counters = pipeline.counters()
    assert counters.dropped > counters.processed, "most frames are replaced by newer ones"
    assert len(pipeline.frames) <= 1
    # Queue wait is at most about one camera period plus one model call in flight.
    waits = [(r.finished_at - r.captured_at) * 1000 - r.inference_ms for r in recorder.results]
    assert max(waits[2:]) < max(r.inference_ms for r in recorder.results) + 100


def test_a_failing_source_fails_the_pipeline_with_its_reason(classifier, running):
    pipeline = running(Pipeline(classifier, CONFIG, BrokenCamera("coffee.png"), [Recorder()]))
    wait_until(lambda: pipeline.capture.error is not None)
    with pytest.raises(WorkerFailed, match="the capture thread failed: the driver crashed"):
        pipeline.raise_if_dead()


def test_live_settings_apply_without_restarting_threads(classifier, running):
    recorder = Recorder()
    pipeline = running(Pipeline(classifier, CONFIG, PhotoCamera("coffee.png"), [recorder]))
    wait_until(lambda: len(recorder.results) >= 2)
    threads = list(pipeline.workers)
    pipeline.apply_live(parse("model: {top_k: 2}\noutput: {interval: 0.1}\nqueue: {size: 3}\n",
                              "reload.yaml"))
    wait_until(lambda: len(recorder.results[-1].classes) == 2)
    assert pipeline.workers == threads and pipeline.frames.resize is not None
    assert pipeline.results_worker.interval == 0.1
