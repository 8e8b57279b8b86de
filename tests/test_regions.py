"""Regions: each half of a real video frame classified on its own, steady states that ignore a
flicker, a box changed by reload, and the config errors that stop the daemon before READY. The
daemon runs in-process (its real Service); one config error goes through the real process."""

from __future__ import annotations

import pytest
import yaml

from pidaemon.config import parse
from pidaemon.config.regions import Below, StateConfig
from pidaemon.errors import EX_CONFIG, ConfigError
from pidaemon.eventlog import journal_fields
from pidaemon.pipeline.frames import RegionResult
from pidaemon.pipeline.state import SteadyState

from .cli_inprocess import run_cli
from .conftest import TORCHSCRIPT, base_config, pi_infer, write_config, write_video
from .regionvideo import CELL, LEFT, RIGHT, write_pairs


def states(daemon, region: str) -> list[str]:
    return [e["state"] for e in daemon.of("state") if e["region"] == region]


@pytest.mark.parametrize("regions, expected", [
    ({"door": {"box": [0, 0, 1.5, 1]}}, "regions.door.box: must be from 0 to 1"),
    ({"door": {"box": [0.5, 0, 0.5, 1]}}, "regions.door.box: must have x2 > x1"),
    ({"door": {"box": [0, 0.2, 1, 0.2]}}, "regions.door.box: must have x2 > x1 and y2 > y1"),
    ({"door": {"box": [0, 0, 1]}}, "regions.door.box: must be [x1, y1, x2, y2]"),
    ({"Door/1": {"box": [0, 0, 1, 1]}}, "regions.Door/1: names a region in MQTT topics"),
    ({"door": {"box": [0, 0, 1, 1], "model": {"torchscript": "m.pt"}}},
     "regions.door.model.labels: is required"),
    ({"door": {"box": [0, 0, 1, 1], "state": {"below": "maybe"}}},
     "regions.door.state.below: must be keep or unknown"),
    ({"door": {"box": [0, 0, 1, 1], "state": {"consecutive": 0}}},
     "regions.door.state.consecutive: must be a whole number from 1"),
])
def test_bad_regions_are_refused_with_the_key(regions, expected):
    with pytest.raises(ConfigError) as error:
        parse(yaml.safe_dump({"regions": regions}), "c.yaml")
    assert expected in str(error.value)


def test_a_name_given_twice_is_refused_with_its_lines():
    text = "regions:\n  door: {box: [0, 0, 1, 1]}\n  door: {box: [0, 0, 0.5, 1]}\n"
    with pytest.raises(ConfigError, match=r"line 3: regions.door: defined again \(first at "
                                          r"line 2\)"):
        parse(text, "c.yaml")


def labels_that_do_not_fit(tmp_path, cache_dir) -> list[str]:
    """`pi-infer run` with a region model of 1000 classes and a labels file of 3."""
    labels = tmp_path / "three.txt"
    labels.write_text("open\nclosed\nhalf\n")
    config = base_config(cache_dir)
    config["regions"] = {"door": {"box": LEFT, "model": {"torchscript": str(TORCHSCRIPT),
                                                         "labels": str(labels)}}}
    path = write_config(tmp_path / "c.yaml", config)
    return ["run", "--config", str(path), "--source", str(tmp_path / "none.avi")]


def check_labels_error(stdout: str) -> None:
    errors = [line for line in stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stdout
    assert "regions.door.model.labels:" in errors[0] and "has 3 labels" in errors[0]
    assert not any(line.startswith("ready in") for line in stdout.splitlines())


def test_labels_that_do_not_fit_the_region_model_exit_78(tmp_path, cache_dir, capsys):
    done = run_cli(capsys, *labels_that_do_not_fit(tmp_path, cache_dir))
    assert done.returncode == EX_CONFIG, done.stdout + done.stderr
    check_labels_error(done.stdout)


@pytest.mark.system
def test_a_region_model_error_exits_78_from_the_process(tmp_path, cache_dir):
    """An error found while loading the models, through the real process: exit 78, one line,
    no traceback."""
    done = pi_infer(*labels_that_do_not_fit(tmp_path, cache_dir))
    assert done.returncode == EX_CONFIG, done.stderr
    check_labels_error(done.stdout)
    assert "Traceback" not in done.stdout + done.stderr


def test_an_unknown_label_in_min_score_exits_78(tmp_path, cache_dir, capsys):
    config = base_config(cache_dir)
    config["regions"] = {"shelf": {"box": LEFT, "state": {"min_score": {"espreso": 0.5}}}}
    path = write_config(tmp_path / "c.yaml", config)
    done = run_cli(capsys, "run", "--config", str(path), "--source", str(tmp_path / "none.avi"))
    assert done.returncode == EX_CONFIG, done.stdout + done.stderr
    assert "regions.shelf.state.min_score.espreso: not a label" in done.stdout


def _result(label: str, score: float) -> RegionResult:
    labels = ["open", "closed", "half"]
    other = (labels.index(label) + 1) % 3
    return RegionResult("door", [labels.index(label), other], [score, 1 - score], labels)


def test_steady_state_rules():
    door = SteadyState("door", StateConfig(consecutive=3))
    seen = [door.update(_result(label, 0.9), t) for t, label in
            enumerate(["open", "closed"] * 5 + ["closed"] * 4)]
    changes = [c for c in seen if c is not None]
    assert [(c.previous, c.state) for c in changes] == [("unknown", "closed")]
    assert seen.index(changes[0]) == 11  # the alternation ends on `closed`: 9, 10, 11
    held = SteadyState("door", StateConfig(hold=2.0))
    assert held.update(_result("open", 0.9), 10.0) is None
    assert held.update(_result("open", 0.9), 11.0) is None
    assert held.update(_result("open", 0.9), 12.0).state == "open"
    keep = SteadyState("door", StateConfig(min_scores=(("open", 0.8),), below=Below.KEEP))
    assert keep.update(_result("open", 0.85), 0).state == "open"
    assert keep.update(_result("open", 0.6), 1) is None and keep.state == "open"
    assert keep.update(_result("closed", 0.6), 2).state == "closed"  # no minimum for closed
    unknown = SteadyState("door", StateConfig(min_score=0.7, below=Below.UNKNOWN))
    assert unknown.update(_result("half", 0.9), 0).state == "half"
    change = unknown.update(_result("half", 0.5), 1)
    assert (change.previous, change.state, change.score) == ("half", "unknown", 0.5)


@pytest.fixture(scope="module")
def swap_video(tmp_path_factory):
    """Coffee left and bird right for 1.5 s, then the other way round for 1.5 s."""
    return write_pairs(tmp_path_factory.mktemp("regions") / "swap.avi",
                       [("coffee.png", "bird.bmp"), ("bird.bmp", "coffee.png")], 15)


def test_each_region_has_its_own_state(tmp_path, cache_dir, swap_video, start_service):
    config = base_config(cache_dir, camera={"device": str(swap_video)})
    config["regions"] = {"left": {"box": LEFT, "state": {"consecutive": 3}},
                         "right": {"box": RIGHT, "state": {"consecutive": 3}}}
    daemon = start_service("--config", str(write_config(tmp_path / "c.yaml", config)))
    assert daemon.finish(timeout=60) == 0
    assert states(daemon, "left") == ["espresso", "chickadee"], daemon.of("state")
    assert states(daemon, "right") == ["chickadee", "espresso"], daemon.of("state")
    first = daemon.of("state")[0]
    fields = journal_fields("state", {k: first[k] for k in ("region", "state", "previous",
                                                              "score")})
    assert fields["PI_INFER_EVENT"] == "state" and fields["PI_INFER_PREVIOUS"] == "unknown"
    assert {"PI_INFER_REGION", "PI_INFER_STATE", "PI_INFER_SCORE"} <= set(fields)
    stats = daemon.of("stats")[-1]
    assert stats["processed"] > 0 and stats["label"] in ("espresso", "chickadee")


def test_a_flicker_is_one_change(tmp_path, cache_dir, start_service):
    # The whole frame alternates between the coffee and the bird every frame for 4 s, then
    # shows the bird: 4 identical results in a row are needed, so only the bird becomes a state.
    # A square frame, so that the whole-frame region sees each photo undistorted.
    video = write_video(tmp_path / "flicker.avi", ["coffee.png", "bird.bmp"] * 10
                        + ["bird.bmp"] * 8, 0.2, fps=5, size=(CELL, CELL))
    config = base_config(cache_dir, camera={"device": str(video), "fps": 5},
                         output={"every_frame": True})
    config["regions"] = {"frame": {"box": [0, 0, 1, 1], "state": {"consecutive": 4}}}
    daemon = start_service("--config", str(write_config(tmp_path / "c.yaml", config)))
    assert daemon.finish(timeout=60) == 0
    labels = [e["label"] for e in daemon.of("prediction")]
    assert labels.count("espresso") >= 8 and labels[-1] == "chickadee", labels
    changes = daemon.of("state")
    assert [(c["previous"], c["state"]) for c in changes] == [("unknown", "chickadee")], changes


def test_reload_moves_a_box_live(tmp_path, cache_dir, start_service):
    video = write_pairs(tmp_path / "still.avi", [("coffee.png", "bird.bmp")], 10)
    config = base_config(cache_dir, camera={"device": str(video), "loop": True})
    config["regions"] = {"spot": {"box": LEFT}}
    path = write_config(tmp_path / "c.yaml", config)
    daemon = start_service("--config", str(path))
    daemon.wait_for(lambda e: e["event"] == "state" and e["state"] == "espresso")
    pipeline = daemon.service.pipeline
    config["regions"]["spot"]["box"] = RIGHT
    write_config(path, config)
    daemon.reload()
    applied = daemon.wait_for(lambda e: e["event"] == "reload")
    assert applied["level"] == "info" and applied["changed"] == "regions", applied
    change = daemon.wait_for(lambda e: e["event"] == "state")
    assert (change["previous"], change["state"]) == ("espresso", "chickadee")
    assert not any(e["event"] == "model" and "reloaded" in e["message"] for e in daemon.events)
    # Live: the same pipeline carries on, nothing was restarted.
    assert daemon.running and daemon.service.pipeline is pipeline
    assert not any("stop" in e["message"] for e in daemon.of("lifecycle"))
    daemon.stop()
    assert daemon.finish() == 0
