"""Prometheus metrics and /healthz, scraped over loopback from the daemon's real Service
(in-process); a port already taken and a malformed address are config errors, exit 78."""

from __future__ import annotations

import socket

import pytest

from pidaemon.errors import EX_CONFIG

from .cli_inprocess import run_cli
from .conftest import base_config, http_get, pi_infer, scrape, write_config
from .fakes import SlowModel
from .inprocess import ServiceRun


def start_with_metrics(start_service, tmp_path, cache_dir, photo_video, env=None,
                       **inject) -> ServiceRun:
    config = base_config(cache_dir, camera={"loop": True},
                         metrics={"enabled": True, "listen": "127.0.0.1:0"})
    path = write_config(tmp_path / "c.yaml", config)
    return start_service("--config", str(path), "--source", str(photo_video), env=env, **inject)


def ready(daemon: ServiceRun) -> str:
    """Wait for READY; returns the metrics URL the daemon logged."""
    url = daemon.wait_for(lambda e: e["event"] == "metrics")["url"]
    daemon.wait_for(lambda e: e["event"] == "lifecycle" and e["message"].startswith("ready"))
    return url


def test_counters_grow_and_histograms_fill(tmp_path, cache_dir, photo_video, start_service):
    daemon = start_with_metrics(start_service, tmp_path, cache_dir, photo_video)
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
    daemon.stop()
    assert daemon.finish() == 0


def test_healthz_turns_503_when_inference_hangs(tmp_path, cache_dir, photo_video, start_service,
                                                classifier):
    # The real model, made to hang on demand and let go at the end, so that no thread of the
    # test process is left spinning. A 2 s watchdog (without a notify socket) makes the health
    # window 2 s.
    model = SlowModel(classifier)
    daemon = start_with_metrics(start_service, tmp_path, cache_dir, photo_video,
                                {"WATCHDOG_USEC": "2000000"},
                                load_model=lambda _model, _inference: model)
    url = ready(daemon)
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    assert http_get(f"{url}/healthz") == (200, "ok\n")
    model.running.clear()  # the next frame never comes back from the model
    try:
        while (answer := http_get(f"{url}/healthz"))[0] == 200:
            daemon.wait_for(lambda e: e["event"] == "stats")  # paced by the stats interval
        assert answer == (503, "unhealthy\n")
        assert scrape(url)["pi_infer_healthy"] == 0
    finally:
        model.running.set()
    daemon.stop()
    assert daemon.finish() == 0


def taken_port_config(tmp_path, cache_dir, taken: socket.socket) -> tuple[str, str]:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    listen = f"127.0.0.1:{taken.getsockname()[1]}"
    path = write_config(tmp_path / "c.yaml", base_config(
        cache_dir, metrics={"enabled": True, "listen": listen}))
    return str(path), listen


def test_a_port_in_use_is_a_config_error(tmp_path, cache_dir, photo_video, capsys):
    with socket.socket() as taken:
        path, listen = taken_port_config(tmp_path, cache_dir, taken)
        result = run_cli(capsys, "run", "--config", path, "--source", str(photo_video))
    assert result.returncode == EX_CONFIG
    assert f"metrics.listen: cannot listen on {listen}: Address already in use" in result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("ready in")]


@pytest.mark.system
def test_a_port_in_use_exits_78_from_the_process(tmp_path, cache_dir, photo_video):
    """A server that cannot bind, through the real process: exit 78, one line, no traceback."""
    with socket.socket() as taken:
        path, listen = taken_port_config(tmp_path, cache_dir, taken)
        result = pi_infer("run", "--config", path, "--source", str(photo_video))
    assert result.returncode == EX_CONFIG
    assert f"metrics.listen: cannot listen on {listen}: Address already in use" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_malformed_listen_address_is_a_config_error(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("metrics:\n  enabled: true\n  listen: localhost\n")
    result = run_cli(capsys, "check-config", str(path))
    assert result.returncode == EX_CONFIG
    assert "line 3: metrics.listen: must be ADDRESS:PORT such as 127.0.0.1:9108" in result.stderr


@pytest.mark.system
def test_check_config_exits_78_from_the_process(tmp_path):
    """check-config's error, through the real process: exit 78, one line on stderr."""
    path = tmp_path / "c.yaml"
    path.write_text("metrics:\n  enabled: true\n  listen: localhost\n")
    result = pi_infer("check-config", str(path))
    assert result.returncode == EX_CONFIG
    assert "line 3: metrics.listen: must be ADDRESS:PORT such as 127.0.0.1:9108" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
