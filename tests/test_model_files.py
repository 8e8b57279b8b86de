"""Broken model files exit 78 before READY with one line naming the file and the fix; the
compiled-model cache survives corruption and foreign files."""

import os

import pytest
import torch

from pidaemon.bench.notify_listener import NotifyListener
from pidaemon.errors import EX_CONFIG

from .conftest import LABELS, TORCHSCRIPT, WEIGHTS, base_config, pi_infer, write_config


def run_until_exit(tmp_path, config: dict, *extra: str):
    """`pi-infer run` with a notify socket; returns the process and what it notified."""
    path = write_config(tmp_path / "c.yaml", config)
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        result = pi_infer("run", "--config", str(path), "--duration", "1", *extra,
                          env=listener.env(dict(os.environ)))
        listener.drain(0)
    finally:
        listener.close()
    return result, [message for _, message in listener.messages]


def truncated_weights(tmp_path):
    path = tmp_path / "truncated.pth"
    data = WEIGHTS.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def list_not_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    return path


def other_architecture(tmp_path):
    path = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(4, 2).state_dict(), path)
    return path


@pytest.mark.parametrize(("make_weights", "expected"), [
    (lambda tmp: tmp / "absent.pth", "no such file"),
    (truncated_weights, "truncated or corrupt"),
    (list_not_state_dict, "holds a list, not a state_dict"),
    (other_architecture, "does not fit the quantized MobileNetV2"),
])
def test_bad_weights_exit_78_before_ready(tmp_path, make_weights, expected):
    weights = make_weights(tmp_path)
    config = base_config(tmp_path / "cache", model={"weights": str(weights)})
    result, notified = run_until_exit(tmp_path, config, "--source", "absent.avi")
    assert result.returncode == EX_CONFIG
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stdout
    assert f"model.weights: {weights}" in errors[0] and expected in errors[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not any(m.startswith("READY=1") for m in notified)


def test_broken_torchscript_exits_78(tmp_path):
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    config = base_config(tmp_path / "cache", model={"weights": None,
                                                    "torchscript": str(broken)})
    result, notified = run_until_exit(tmp_path, config)
    assert result.returncode == EX_CONFIG
    assert f"model.torchscript: {broken}: not a loadable TorchScript model" in result.stdout
    assert not any(m.startswith("READY=1") for m in notified)


def test_labels_that_do_not_match_the_outputs_exit_78(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    config = base_config(tmp_path / "cache", model={"labels": str(labels)})
    result, notified = run_until_exit(tmp_path, config)
    assert result.returncode == EX_CONFIG
    assert f"model.labels: {labels} has 2 labels but the model has 1000 outputs" in result.stdout
    assert not any(m.startswith("READY=1") for m in notified)


def test_a_users_torchscript_model_with_its_labels(tmp_path, photo_video):
    config = base_config(tmp_path / "cache", model={
        "weights": None, "torchscript": str(TORCHSCRIPT), "labels": str(LABELS)},
        inference={"engine": "qnnpack"}, output={"every_frame": True})
    result, notified = run_until_exit(tmp_path, config, "--source", str(photo_video))
    assert result.returncode == 0, result.stdout + result.stderr
    assert any(m.startswith("READY=1") for m in notified)
    assert "model: TorchScript" in result.stdout and "top1=" in result.stdout
    # The first photo's class among each frame's top 5 (grace_hopper is ambiguous, tests/labels.py).
    frames = [line for line in result.stdout.splitlines() if line.startswith("prediction seq=")]
    assert frames and "military uniform (652)" in frames[0], result.stdout


def cached_files(cache):
    return sorted(p.name for p in cache.iterdir())


def test_corrupt_and_foreign_cache_files_are_rebuilt(tmp_path, photo_video):
    cache = tmp_path / "cache"
    config = base_config(cache)
    first, _ = run_until_exit(tmp_path, config, "--source", str(photo_video))
    assert first.returncode == 0 and "model cache written" in first.stdout
    [entry] = cache.iterdir()
    entry.write_bytes(entry.read_bytes()[:1000])  # a torn write from an old crash
    second, _ = run_until_exit(tmp_path, config, "--source", str(photo_video))
    assert second.returncode == 0
    assert f"model cache {entry} cannot be loaded" in second.stdout
    assert "rebuilding it" in second.stdout and "model cache written" in second.stdout
    entry.write_bytes(TORCHSCRIPT.read_bytes())  # a foreign TorchScript file under our name
    third, _ = run_until_exit(tmp_path, config, "--source", str(photo_video))
    assert third.returncode == 0
    assert "was not written by this version of pi-infer" in third.stdout
    fourth, _ = run_until_exit(tmp_path, config, "--source", str(photo_video))
    assert fourth.returncode == 0 and f"model: compiled cache {entry}" in fourth.stdout
    assert cached_files(cache) == [entry.name], "no temporary files left behind"


def test_unwritable_cache_directory_is_a_warning(tmp_path, photo_video):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # no directory can be made below a file, not even by root
    result, _ = run_until_exit(tmp_path, base_config(blocker / "cache"),
                               "--source", str(photo_video))
    assert result.returncode == 0
    assert f"cannot write the model cache in {blocker / 'cache'}" in result.stdout
    assert "top1=" in result.stdout


def test_prepare_builds_the_cache_and_classify_uses_it(tmp_path):
    cache = tmp_path / "cache"
    path = write_config(tmp_path / "c.yaml", base_config(cache))
    result = pi_infer("prepare", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "model ready: built from" in result.stdout
    [entry] = cache.iterdir()
    assert entry.name.startswith("mobilenet_v2-") and f"torch{torch.__version__}" in entry.name
    again = pi_infer("prepare", "--config", str(path))
    assert f"model ready: compiled cache {entry}" in again.stdout
