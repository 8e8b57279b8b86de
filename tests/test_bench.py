"""`pi-infer bench`: the simulated camera behaves like a V4L2 driver, and a quick run produces
a complete, self-consistent report. No timing is asserted: that is what the bench is for.

The bench smoke tests run `pi-infer bench` (which starts processes of its own) and measure fresh
processes: they are marked system, and run niced. The cameras bench's pipelines run here, on
the session's compiled model.
"""

import importlib.util
import json
import time

import numpy as np
import pytest

from pidaemon.bench.simcamera import DRIVER_BUFFERS, SimulatedCamera

from .conftest import SHARED, pi_infer

# The smoke runs assert no timing; at the lowest priority they leave the CPU to the system
# tests beside them that time a daemon's stop.
NICE = 19


def test_a_reader_that_falls_behind_gets_the_oldest_frames():
    images = [np.full((8, 8, 3), i, np.uint8) for i in range(3)]
    camera = SimulatedCamera(images, fps=500)
    camera.open()
    while camera.produced < DRIVER_BUFFERS + 3:  # the reader is late: every buffer is full
        time.sleep(0.01)
    ok, image = camera.read()
    assert ok and camera.last is not None and camera.last.seq == 1
    assert image is images[0]
    assert camera.ring_dropped >= 3
    # The buffer just read is held by the reader until its next read, so the frames still
    # queued are the next ones in line, however many the sensor took meanwhile.
    seqs = [camera.last.seq]
    for _ in range(DRIVER_BUFFERS - 1):
        assert camera.read()[0]
        seqs.append(camera.last.seq)
    assert seqs == list(range(1, DRIVER_BUFFERS + 1))
    assert camera.read()[0] and camera.last.seq > DRIVER_BUFFERS + 3  # then a fresh one
    assert camera.captured_at == sorted(camera.captured_at)
    camera.release()


@pytest.mark.system
@pytest.mark.skipif(not (SHARED / "images").is_dir(), reason="needs the shared photos")
def test_quick_bench_reports_every_measurement(tmp_path):
    out = tmp_path / "bench.json"
    result = pi_infer("bench", "--quick", "--seconds", "0.5", "--shared", str(SHARED),
                      "--json", str(out), timeout=900, nice=NICE)
    assert result.returncode == 0, result.stderr
    assert "targets" in result.stdout
    report = json.loads(out.read_text())

    assert report["conditions"]["quick"] is True
    for row in report["model_only"]:
        assert row["p50_ms"] > 0 and row["fps"] > 0 and row["calls"] >= 10
    engines = {row["engine"] for row in report["model_only"]}
    assert {"qnnpack", report["auto_engine"]} <= engines
    if importlib.util.find_spec("executorch") is not None:  # the xnnpack engine beside them
        assert "xnnpack" in engines
        assert {r["scenario"] for r in report["scenarios"] if r["engine"] == "xnnpack"} == {
            "pi-like-xnnpack", "overload-xnnpack", "throughput-xnnpack"}
        warm = report["startup"]["xnnpack"]["warm"]
        assert warm["exit_code"] == 0 and warm["children_peak_rss_mb"] > 0
        assert {"xnnpack-vs-qnnpack", "xnnpack-pi-like-latency", "xnnpack-overload-age"} <= {
            t["name"] for t in report["targets"]}

    runs = {(r["scenario"], r["runner"]) for r in report["scenarios"]}
    for scenario in ("pi-like", "overload", "throughput"):
        assert {(scenario, "tutorial"), (scenario, "pi-infer")} <= runs
    for run in report["scenarios"]:
        assert run["processed"] > 0 and run["fps"] > 0
        assert 0 < run["latency_p50_ms"] <= run["latency_p95_ms"]
        # A frame is read after it was captured, so it is never younger than its latency.
        assert run["age_p50_ms"] >= run["latency_p50_ms"]
        assert run["dropped"] <= run["frames"]

    page = {(r["page"], r["viewers"]): r for r in report["page"]["rows"]}
    assert set(page) == {("off", 0), ("on", 0), ("on", 1), ("on", 3)}
    assert page["off", 0]["cpu_vs_off"] == 1.0

    startup = report["startup"]
    assert startup["cold"]["ready_s"] > 0 and startup["warm"]["ready_s"] > 0
    assert startup["cold"]["torchvision_loaded"], "the cold start builds the model"
    assert not startup["warm"]["torchvision_loaded"]
    assert startup["warm"]["exit_code"] == 0
    assert startup["bare"]["peak_rss_mb"] > 0

    training = report["training"]
    assert training["labels"] == 4 and training["images_per_label"] == 6, training
    assert training["seconds"]["features"] > 0 and 0 <= training["held_out_accuracy"] <= 1
    assert "pi-infer train, 4 labels x 6 images:" in result.stdout

    names = {t["name"] for t in report["targets"]}
    assert {"throughput", "auto-threads", "pi-like-latency", "pipeline-cpu", "overload-age",
            "overload-age-same-threads", "warm-start", "peak-rss"} <= names
    tutorial = [r for r in report["scenarios"] if r["runner"] == "tutorial"]
    assert {r["default_threads"] for r in tutorial} == {True, False}, \
        "the tutorial runs at its default and at pi-infer's thread count"
    pipeline = [r for r in report["scenarios"] if r["runner"] == "pi-infer"]
    assert all(r["model_cpu_cores"] > 0 for r in pipeline)
    for target in report["targets"]:
        assert target["passed"] in (True, False, None)
        assert target["passed"] is None or target["ratio"] is not None


@pytest.mark.system
@pytest.mark.skipif(not (SHARED / "images").is_dir(), reason="needs the shared photos")
def test_the_page_bench_encodes_only_for_viewers(tmp_path):
    out = tmp_path / "page.json"
    result = pi_infer("bench", "--page", "--quick", "--seconds", "1", "--shared", str(SHARED),
                      "--json", str(out), timeout=900, nice=NICE)
    assert result.returncode == 0, result.stderr
    assert "live page" in result.stdout
    rows = {(r["page"], r["viewers"]): r for r in json.loads(out.read_text())["page"]["rows"]}
    assert rows["off", 0]["encoded_fps"] == rows["on", 0]["encoded_fps"] == 0
    for viewers in (1, 3):
        assert rows["on", viewers]["encoded_fps"] > 0
        assert len(rows["on", viewers]["cpu_runs"]) == 2
    for row in rows.values():
        assert row["fps"] > 0 and row["cpu_cores"] > 0


def test_cameras_bench_runs_several_cameras_each_way(cache_dir, classifier):
    from pidaemon.bench import cameras

    for batch in (False, True, None):
        row = cameras.run(SHARED, cache_dir, "auto", 2, batch, 1.0)
        assert row["cameras"] == 2 and row["fps"] > 0 and row["rss_mb"] > 0
        assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"]


@pytest.mark.system
def test_cameras_bench_measures_a_fresh_process(cache_dir, classifier):
    from pidaemon.bench import cameras

    peak, running = cameras.rss_mb(SHARED, cache_dir, 1, 1.0)
    assert peak >= running > 0
