"""The whole daemon as a user runs it: a video of real photos in, predictions out in order."""

import signal

import pytest

from .cli_inprocess import run_cli
from .conftest import PHOTO_ORDER, base_config, write_config, write_video
from .labels import photo_runs


@pytest.fixture(scope="module")
def quick_video(tmp_path_factory):
    """The five photos, 0.5 s each at 10 fps (the config's camera.fps): 25 frames in 2.5 s."""
    return write_video(tmp_path_factory.mktemp("video") / "quick.avi", PHOTO_ORDER, 0.5)


def test_predictions_follow_the_photos_in_order(tmp_path, cache_dir, quick_video, start_service):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, output={"every_frame": True}))
    daemon = start_service("--config", str(config), "--source", str(quick_video),
                           "--duration", "30")
    assert daemon.finish(timeout=60) == 0
    predictions = daemon.of("prediction")
    assert len(predictions) >= 15, "a 2.5 s video at 10 fps gives 25 frames"
    assert photo_runs(predictions) == ["grace_hopper.jpg", "cat", "coffee.png",
                                       "bird.bmp", "cat"]
    first = predictions[0]
    assert set(first) >= {"seq", "classes", "labels", "scores", "latency_ms"}
    assert len(first["classes"]) == 5 and first["latency_ms"] > 0
    assert [p["seq"] for p in predictions] == sorted(p["seq"] for p in predictions)
    stats = daemon.of("stats")
    assert stats and max(s["fps"] for s in stats) > 0
    assert all(s["latency_p50_ms"] is None or s["latency_p50_ms"] > 0 for s in stats)
    assert any(e.get("state") == "ended" for e in daemon.of("camera"))
    assert daemon.events[-1]["message"] == "stopped"


@pytest.mark.system
def test_sigterm_stops_cleanly(tmp_path, cache_dir, photo_video, start_daemon):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={"loop": True}))
    daemon = start_daemon("--config", str(config), "--source", str(photo_video))
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    daemon.signal(signal.SIGTERM)
    assert daemon.finish(timeout=5) == 0
    assert daemon.events[-1]["message"] == "stopped"


def test_text_output_is_one_line_per_event(tmp_path, cache_dir, quick_video, capsys):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir))
    # `pi-infer run` as the CLI runs it, its text log on (captured) stdout
    result = run_cli(capsys, "run", "--config", str(config), "--source", str(quick_video),
                     "--duration", "20")
    out = result.stdout
    assert result.returncode == 0, out
    stats = [line for line in out.splitlines() if line.startswith("stats: fps=")]
    assert stats, out
    assert "camera: opened" in out and "top1=" in stats[-1]
