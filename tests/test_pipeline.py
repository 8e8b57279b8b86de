"""The whole daemon as a user runs it: a video of real photos in, predictions out in order."""

import signal

from .conftest import base_config, write_config
from .labels import photo_runs


def test_predictions_follow_the_photos_in_order(tmp_path, cache_dir, photo_video, start_daemon):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, output={"every_frame": True}))
    daemon = start_daemon("--config", str(config), "--source", str(photo_video),
                          "--duration", "30")
    code = daemon.finish(timeout=90)
    assert code == 0, daemon.stderr
    predictions = daemon.of("prediction")
    assert len(predictions) >= 30, "a 5 s video at 10 fps gives about 50 frames"
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


def test_sigterm_stops_cleanly(tmp_path, cache_dir, photo_video, start_daemon):
    config = write_config(tmp_path / "c.yaml", base_config(cache_dir, camera={"loop": True}))
    daemon = start_daemon("--config", str(config), "--source", str(photo_video))
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    daemon.signal(signal.SIGTERM)
    assert daemon.finish(timeout=5) == 0
    assert daemon.events[-1]["message"] == "stopped"


def test_text_output_is_one_line_per_event(tmp_path, cache_dir, photo_video):
    from .conftest import pi_infer

    config = write_config(tmp_path / "c.yaml", base_config(cache_dir))
    result = pi_infer("run", "--config", str(config), "--source", str(photo_video),
                      "--duration", "20", timeout=90)
    assert result.returncode == 0, result.stderr
    stats = [line for line in result.stdout.splitlines() if line.startswith("stats: fps=")]
    assert stats, result.stdout
    assert "camera: opened" in result.stdout and "top1=" in stats[-1]
