"""Prometheus metrics and /healthz, scraped over loopback from the daemon as a user runs it."""

from __future__ import annotations

import os
import socket

from pidaemon.errors import EX_CONFIG

from .conftest import Daemon, base_config, http_get, pi_infer, scrape, write_config


def start_with_metrics(start_daemon, tmp_path, cache_dir, photo_video, env=None,
                       model: dict | None = None) -> Daemon:
    config = base_config(cache_dir, camera={"loop": True}, model=model or {},
                         metrics={"enabled": True, "listen": "127.0.0.1:0"})
    path = write_config(tmp_path / "c.yaml", config)
    return start_daemon("--config", str(path), "--source", str(photo_video), env=env)


def ready(daemon: Daemon) -> str:
    """Wait for READY; returns the metrics URL the daemon logged."""
    url = daemon.wait_for(lambda e: e["event"] == "metrics")["url"]
    daemon.wait_for(lambda e: e["event"] == "lifecycle" and e["message"].startswith("ready"))
    return url


def test_counters_grow_and_histograms_fill(tmp_path, cache_dir, photo_video, start_daemon):
    daemon = start_with_metrics(start_daemon, tmp_path, cache_dir, photo_video)
    url = ready(daemon)
    assert url.startswith("http://127.0.0.1:")
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    assert http_get(f"{url}/healthz") == (200, "ok\n")
    first = scrape(url)
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > first[
        "pi_infer_frames_processed_total"] + 10)
    second = scrape(url)
    for counter in ("captured", "processed"):
        name = f"pi_infer_frames_{counter}_total"
        assert second[name] > first[name] > 0, name
    for name in ("dropped", "bad", "failed"):
        assert f"pi_infer_frames_{name}_total" in second
    for histogram in ("inference_latency", "capture_to_result_latency"):
        count = second[f"pi_infer_{histogram}_seconds_count"]
        assert count > first[f"pi_infer_{histogram}_seconds_count"] > 0
        assert second[f'pi_infer_{histogram}_seconds_bucket{{le="+Inf"}}'] == count
        assert second[f"pi_infer_{histogram}_seconds_sum"] > 0
    assert second['pi_infer_camera_state{pi_infer_camera_state="streaming"}'] == 1
    assert second['pi_infer_camera_state{pi_infer_camera_state="lost"}'] == 0
    engine = next(e for e in daemon.events if e["event"] == "model")["engine"]
    info = next(k for k in second if k.startswith("pi_infer_model_info{"))
    assert f'engine="{engine}"' in info and 'model="mobilenet_v2"' in info
    assert 'classes="1000"' in info
    assert second["pi_infer_last_prediction_timestamp_seconds"] > 1.6e9
    assert second["pi_infer_healthy"] == 1
    assert "process_resident_memory_bytes" in second
    assert http_get(f"{url}/nothing")[0] == 404


def test_healthz_turns_503_when_inference_hangs(tmp_path, cache_dir, photo_video, start_daemon,
                                                hanging_model):
    # A 2 s watchdog (without a notify socket) makes the health window 2 s.
    env = {**os.environ, "WATCHDOG_USEC": "2000000"}
    daemon = start_with_metrics(start_daemon, tmp_path, cache_dir, photo_video, env,
                                model=hanging_model)
    url = ready(daemon)
    while (answer := http_get(f"{url}/healthz"))[0] == 200:
        daemon.wait_for(lambda e: e["event"] == "stats")  # paced by the stats interval
    assert answer == (503, "unhealthy\n")
    assert scrape(url)["pi_infer_healthy"] == 0


def test_a_port_in_use_is_a_config_error(tmp_path, cache_dir, photo_video):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        path = write_config(tmp_path / "c.yaml", base_config(
            cache_dir, metrics={"enabled": True, "listen": listen}))
        result = pi_infer("run", "--config", str(path), "--source", str(photo_video))
    assert result.returncode == EX_CONFIG
    assert f"metrics.listen: cannot listen on {listen}: Address already in use" in result.stdout


def test_a_malformed_listen_address_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("metrics:\n  enabled: true\n  listen: localhost\n")
    result = pi_infer("check-config", str(path))
    assert result.returncode == EX_CONFIG
    assert "line 3: metrics.listen: must be ADDRESS:PORT such as 127.0.0.1:9108" in result.stderr
