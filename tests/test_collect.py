"""collect: the daemon keeps the frames it saw as examples to sort and train on.

Run for real (the daemon's Service, in-process) on a short video of the photos: files named so
they sort by label, a cap that removes the oldest of its own files (never a user's), a disk that
refuses writes warned about once, and nothing kept or called when collect is off.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pidaemon.config import CollectConfig, Config, OutputConfig, parse
from pidaemon.outputs import build_sinks
from pidaemon.outputs.collect import OURS, Collector, CollectSink, file_name
from pidaemon.pipeline import Pipeline

from .conftest import (
    CAT_CLASSES,
    IMAGES,
    LABELS,
    PHOTO_ORDER,
    base_config,
    write_config,
    write_video,
)
from .fakes import PhotoCamera, Recorder, wait_until

FPS = 25


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The five photos, 0.6 s each at 25 fps: 3 s, ending on a cat."""
    return write_video(tmp_path_factory.mktemp("collect") / "photos.avi", PHOTO_ORDER, 0.6, FPS)


def collect_config(tmp_path: Path, cache_dir: Path, **collect: object) -> Path:
    config = base_config(cache_dir, camera={"fps": FPS}, collect=collect)
    return write_config(tmp_path / "collect.yaml", config)


def test_file_names_sort_by_label_and_are_safe() -> None:
    when = time.mktime((2026, 11, 30, 4, 15, 0, 0, 0, -1)) + 0.123
    assert file_name("military uniform", 0.4321, when) == \
        "military-uniform_0.43_20261130-041500.123.jpg"
    assert file_name("../../etc/passwd", 1.0, when).startswith("etc-passwd_1.00_")
    assert file_name("***", 0.0, when).startswith("unlabelled_0.00_")
    assert OURS.match(file_name("Granny Smith", 0.5, when))
    assert not OURS.match("holiday.jpg")


def test_daemon_collects_frames_and_keeps_the_cap(tmp_path: Path, cache_dir: Path,
                                                  short_video: Path, start_service) -> None:
    folder = tmp_path / "examples"
    folder.mkdir()
    mine = folder / "holiday.jpg"  # a user's file: never counted, never removed
    mine.write_bytes(b"mine")
    old = folder / "espresso_0.90_20200101-000000.000.jpg"  # an earlier run's: the oldest
    old.write_bytes(b"old")
    os.utime(old, (1, 1))
    config = collect_config(tmp_path, cache_dir, directory=str(folder), interval=0.1,
                            max_files=5)
    daemon = start_service("--config", str(config), "--source", str(short_video))
    assert daemon.finish(timeout=60) == 0
    started = daemon.of("collect")
    assert len(started) == 1 and started[0]["level"] == "info", daemon.events[-5:]
    processed = daemon.of("stats")[-1]["processed"]
    assert processed >= 10
    files = sorted(p.name for p in folder.iterdir())
    ours = [name for name in files if OURS.match(name)]
    assert len(ours) == 5 and old.name not in ours, files
    assert files == sorted([*ours, "holiday.jpg"]), files  # no temporary file left
    assert mine.read_bytes() == b"mine"
    imagenet = LABELS.read_text().splitlines()
    for name in ours:
        image = cv2.imread(str(folder / name))
        assert image is not None and image.shape == (224, 224, 3), name
        assert 0.0 <= float(name.split("_")[1]) <= 1.0, name
    # The video ends on a cat, whose class wins clearly: the newest file is labelled with it.
    newest = max(ours, key=lambda name: name.split("_")[-1])
    cats = {file_name(imagenet[c], 1.0, 0).split("_")[0] for c in CAT_CLASSES}
    assert newest.split("_")[0] in cats, ours


def test_an_unwritable_directory_is_one_warning_not_a_crash(tmp_path: Path, cache_dir: Path,
                                                            short_video: Path,
                                                            start_service) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the folder would go")
    config = collect_config(tmp_path, cache_dir, directory=str(blocker / "examples"),
                            interval=0.1)
    daemon = start_service("--config", str(config), "--source", str(short_video))
    assert daemon.finish(timeout=60) == 0
    warnings = [e for e in daemon.of("collect") if e["level"] == "warning"]
    assert len(warnings) == 1, warnings
    assert f"cannot save to {blocker / 'examples'}" in warnings[0]["message"]
    assert daemon.of("stats")[-1]["processed"] >= 10  # the pipeline went on


def test_low_scores_are_saved_at_most_once_a_second(tmp_path: Path, cache_dir: Path,
                                                    short_video: Path, start_service) -> None:
    folder = tmp_path / "unsure"
    config = collect_config(tmp_path, cache_dir, directory=str(folder), interval=3600,
                            min_score_below=1.0)
    started = time.monotonic()
    daemon = start_service("--config", str(config), "--source", str(short_video))
    assert daemon.finish(timeout=60) == 0
    seconds = time.monotonic() - started
    saved = [p for p in folder.iterdir() if OURS.match(p.name)]
    assert 2 <= len(saved) <= seconds + 1, (len(saved), seconds)


def test_collect_off_keeps_no_image_and_adds_no_sink(classifier, running) -> None:
    off = Config(output=OutputConfig(interval=0.2))
    assert not any(isinstance(s, CollectSink) for s in build_sinks(off, view=None))
    recorder = Recorder()
    pipeline = running(Pipeline(classifier, off, PhotoCamera("coffee.png"), [recorder]))
    wait_until(lambda: len(recorder.results) >= 3)
    assert all(r.images == () for r in recorder.results)
    assert not pipeline.capture.keep_images


def test_collect_on_passes_the_model_input_along(classifier, running, tmp_path: Path) -> None:
    on = Config(output=OutputConfig(interval=0.2),
                collect=CollectConfig(directory=str(tmp_path)))
    recorder = Recorder()
    pipeline = running(Pipeline(classifier, on, PhotoCamera("coffee.png"), [recorder]))
    wait_until(lambda: len(recorder.results) >= 3)
    assert all(len(r.images) == 1 and r.images[0].shape == (224, 224, 3)
               for r in recorder.results)
    assert pipeline.capture.keep_images


def test_regions_are_collected_in_a_folder_each(classifier, running, tmp_path: Path) -> None:
    config = parse(f"regions:\n  left: {{box: [0, 0, 0.5, 1]}}\n"
                   f"  right: {{box: [0.5, 0, 1, 1]}}\n"
                   f"collect: {{directory: {tmp_path}, interval: 0.1}}\n"
                   f"output: {{interval: 0.2}}\n", "regions.yaml")
    sink = CollectSink(config.collect)
    sink.start()
    try:
        pipeline = running(Pipeline(classifier, config, PhotoCamera("coffee.png"), [sink]))
        wait_until(lambda: all((tmp_path / name).is_dir() and any(
            OURS.match(p.name) for p in (tmp_path / name).iterdir()) for name in ("left", "right")))
        pipeline.stop()
    finally:
        sink.stop()
    for name in ("left", "right"):
        image = cv2.imread(str(next(p for p in (tmp_path / name).iterdir() if OURS.match(p.name))))
        assert image.shape == (224, 224, 3), "each region's crop, as the model saw it"


def test_an_unchanged_scene_is_not_kept_again_a_changed_one_is(tmp_path: Path) -> None:
    coffee = cv2.cvtColor(cv2.resize(cv2.imread(str(IMAGES / "coffee.png")), (224, 224)),
                          cv2.COLOR_BGR2RGB)
    bird = cv2.cvtColor(cv2.resize(cv2.imread(str(IMAGES / "bird.bmp")), (224, 224)),
                        cv2.COLOR_BGR2RGB)
    collector = Collector(CollectConfig(directory=str(tmp_path), interval=0.1))
    collector.start()
    try:
        assert collector.offer("espresso", 0.9, coffee)
        time.sleep(0.15)
        noisy = np.clip(coffee.astype(np.int16) + 2, 0, 255).astype(np.uint8)
        assert not collector.offer("espresso", 0.9, noisy), "the same scene, a little brighter"
        assert collector.offer("chickadee", 0.9, bird), "a changed scene is kept at once"
        time.sleep(0.15)
        assert collector.offer("espresso", 0.9, coffee, changed=True), "a state change is kept"
    finally:
        collector.stop()
    names = sorted(p.name.split("_")[0] for p in tmp_path.iterdir() if OURS.match(p.name))
    assert names == ["chickadee", "espresso", "espresso"]
