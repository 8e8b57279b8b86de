"""A reload (SIGHUP's work, asked in-process): what can change live does, the camera and model
reopen when their keys change, and a broken config or a storm of requests never takes the
daemon down."""

import time

from .conftest import base_config, write_config, write_video


def is_prediction(k: int):
    return lambda e: e["event"] == "prediction" and len(e["classes"]) == k


def test_top_k_changes_live_without_restart(tmp_path, cache_dir, photo_video, start_service):
    path = tmp_path / "c.yaml"
    cfg = base_config(cache_dir, camera={"loop": True, "device": str(photo_video)},
                      output={"every_frame": True})
    write_config(path, cfg)
    daemon = start_service("--config", str(path))
    daemon.wait_for(is_prediction(5))
    cfg["model"]["top_k"] = 2
    write_config(path, cfg)
    daemon.reload()
    applied = daemon.wait_for(lambda e: e["event"] == "reload")
    assert applied["level"] == "info" and applied["changed"] == "model"
    daemon.wait_for(is_prediction(2))
    assert not any(e["event"] == "model" and "reloaded" in e["message"] for e in daemon.events)
    assert daemon.running
    daemon.stop()
    assert daemon.finish() == 0


def test_broken_config_keeps_the_running_one(tmp_path, cache_dir, photo_video, start_service):
    path = tmp_path / "c.yaml"
    cfg = base_config(cache_dir, camera={"loop": True, "device": str(photo_video)},
                      output={"every_frame": True}, model={"top_k": 3})
    write_config(path, cfg)
    daemon = start_service("--config", str(path))
    daemon.wait_for(is_prediction(3))
    path.write_text(path.read_text() + "output:\n  interval: -1\n  bogus: [\n")
    daemon.reload()
    failed = daemon.wait_for(lambda e: e["event"] == "reload")
    assert failed["level"] == "error"
    assert "keeping the running configuration" in failed["message"]
    assert str(path) in failed["message"] and "not valid YAML" in failed["message"]
    daemon.wait_for(is_prediction(3))
    daemon.stop()
    assert daemon.finish() == 0


def test_sighup_storm(tmp_path, cache_dir, photo_video, start_service):
    path = write_config(tmp_path / "c.yaml", base_config(
        cache_dir, camera={"loop": True, "device": str(photo_video)}))
    daemon = start_service("--config", str(path))
    daemon.wait_for(lambda e: e["event"] == "lifecycle" and e["message"].startswith("ready"))
    for _ in range(10):
        daemon.reload()
        time.sleep(0.02)
    daemon.wait_for(lambda e: e["event"] == "reload")
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    assert daemon.running
    assert all(e["level"] != "error" for e in daemon.events)
    daemon.stop()
    assert daemon.finish() == 0


def test_camera_and_model_keys_reopen_and_reload(tmp_path, cache_dir, photo_video, start_service):
    coffee = write_video(tmp_path / "coffee.avi", ["coffee.png"], 1.0)
    path = tmp_path / "c.yaml"
    cfg = base_config(cache_dir, camera={"loop": True, "device": str(photo_video)},
                      output={"every_frame": True})
    write_config(path, cfg)
    daemon = start_service("--config", str(path))
    daemon.wait_for(lambda e: e["event"] == "prediction")
    cfg["camera"]["device"] = str(coffee)
    cfg["inference"]["engine"] = "qnnpack"
    write_config(path, cfg)
    daemon.reload()
    applied = daemon.wait_for(lambda e: e["event"] == "reload", timeout=60)
    assert applied["changed"] == "camera,inference"
    assert any(e["event"] == "model" and "engine qnnpack" in e["message"]
               for e in daemon.events)
    daemon.seen_or_wait(lambda e: e["event"] == "camera" and e.get("state") == "opened"
                        and e["device"] == str(coffee))
    # At most the queued frame and the one in the model come from the old camera.
    after = len(daemon.of("prediction"))
    daemon.wait_for(lambda e: len(daemon.of("prediction")) >= after + 5)
    assert {e["labels"][0] for e in daemon.of("prediction")[-3:]} == {"espresso"}
    daemon.stop()
    assert daemon.finish() == 0
