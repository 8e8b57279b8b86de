"""Broken model files exit 78 before READY with one line naming the file and the fix; the
compiled-model cache survives corruption and foreign files.

The daemon runs in-process (start_service) with a NOTIFY_SOCKET of the test's own; one system
test proves through the real process that a broken model is exit 78 and one line, without a
traceback and without READY. The cache tests rebuild with a small stand-in model
(fakes.build_small_model): the real cold build and compile is test_prepare_builds_the_cache.
"""

import functools
import os
from collections.abc import Iterator

import pytest
import torch

from pidaemon.bench.notify_listener import NotifyListener
from pidaemon.config import InferenceConfig, ModelConfig
from pidaemon.errors import EX_CONFIG
from pidaemon.model.classifier import load_classifier

from .cli_inprocess import logged, run_cli
from .conftest import LABELS, TORCHSCRIPT, WEIGHTS, base_config, pi_infer, write_config
from .fakes import build_small_model
from .inprocess import ready


@pytest.fixture
def notify(tmp_path) -> Iterator[NotifyListener]:
    """What systemd would hear: a NOTIFY_SOCKET of the test's own."""
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


def notified(listener: NotifyListener) -> list[str]:
    listener.drain(0)
    return [message for _, message in listener.messages]


def start(start_service, tmp_path, notify: NotifyListener, config: dict, *extra: str, **inject):
    """The daemon in-process on `config`, notifying `notify`."""
    path = write_config(tmp_path / "c.yaml", config)
    return start_service("--config", str(path), *extra, env={"NOTIFY_SOCKET": notify.path},
                         **inject)


def refused_before_ready(daemon, notify: NotifyListener) -> str:
    """It exits 78 with one error line (no traceback in any line) and never says READY."""
    assert daemon.finish() == EX_CONFIG
    errors = daemon.of("error")
    assert len(errors) == 1, daemon.events
    assert errors[0]["exit_code"] == EX_CONFIG
    assert not any("Traceback" in e["message"] for e in daemon.events), daemon.events
    assert not any(m.startswith("READY=1") for m in notified(notify))
    return errors[0]["message"]


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
def test_bad_weights_exit_78_before_ready(tmp_path, start_service, notify, make_weights,
                                          expected):
    weights = make_weights(tmp_path)
    config = base_config(tmp_path / "cache", model={"weights": str(weights)})
    daemon = start(start_service, tmp_path, notify, config, "--source", "absent.avi")
    error = refused_before_ready(daemon, notify)
    assert f"model.weights: {weights}" in error and expected in error


@pytest.mark.system
def test_bad_weights_end_the_process_with_78_before_ready(tmp_path, notify):
    weights = truncated_weights(tmp_path)
    path = write_config(tmp_path / "c.yaml", base_config(tmp_path / "cache", model={
        "weights": str(weights)}))
    result = pi_infer("run", "--config", str(path), "--duration", "1", "--source", "absent.avi",
                      env=notify.env(dict(os.environ)))
    assert result.returncode == EX_CONFIG
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stdout
    assert f"model.weights: {weights}" in errors[0] and "truncated or corrupt" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not any(m.startswith("READY=1") for m in notified(notify))


def test_broken_torchscript_exits_78(tmp_path, start_service, notify):
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    config = base_config(tmp_path / "cache", model={"weights": None,
                                                    "torchscript": str(broken)})
    error = refused_before_ready(start(start_service, tmp_path, notify, config), notify)
    assert f"model.torchscript: {broken}: not a loadable TorchScript model" in error


def test_labels_that_do_not_match_the_outputs_exit_78(tmp_path, cache_dir, classifier,
                                                      start_service, notify):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    config = base_config(cache_dir, model={"labels": str(labels)})
    error = refused_before_ready(start(start_service, tmp_path, notify, config), notify)
    assert f"model.labels: {labels} has 2 labels but the model has 1000 outputs" in error


def test_a_users_torchscript_model_with_its_labels(tmp_path, photo_video, start_service,
                                                   notify):
    config = base_config(tmp_path / "cache", model={
        "weights": None, "torchscript": str(TORCHSCRIPT), "labels": str(LABELS)},
        inference={"engine": "qnnpack"}, output={"every_frame": True})
    daemon = start(start_service, tmp_path, notify, config, "--source", str(photo_video))
    daemon.wait_for(ready)
    assert any(m.startswith("READY=1") for m in notified(notify))
    assert daemon.of("model")[0]["message"].startswith("model: TorchScript")
    # The first photo's class among each frame's top 5 (grace_hopper is ambiguous, tests/labels.py).
    first = daemon.wait_for(lambda e: e["event"] == "prediction")
    assert 652 in first["classes"] and "military uniform (652)" in first["message"], first
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    daemon.stop()
    assert daemon.finish() == 0


# -- the compiled-model cache -------------------------------------------------------------------
def load_small(cache) -> tuple[str, list[str]]:
    """load_classifier with the cache in `cache`, building the small model when it must;
    returns the model's description and what was logged."""
    with logged() as lines:
        loaded = load_classifier(ModelConfig(weights=str(WEIGHTS), cache_dir=str(cache)),
                                 InferenceConfig(threads=1), build=build_small_model)
    return loaded.description, lines


def cached_files(cache):
    return sorted(p.name for p in cache.iterdir())


def test_corrupt_and_foreign_cache_files_are_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    description, lines = load_small(cache)
    assert description.startswith("built from") and any(
        line.startswith("model cache written") for line in lines), lines
    [entry] = cache.iterdir()
    entry.write_bytes(entry.read_bytes()[:1000])  # a torn write from an old crash
    description, lines = load_small(cache)
    text = "\n".join(lines)
    assert f"model cache {entry} cannot be loaded" in text
    assert "rebuilding it" in text and "model cache written" in text
    assert description.startswith("built from")
    entry.write_bytes(TORCHSCRIPT.read_bytes())  # a foreign TorchScript file under our name
    description, lines = load_small(cache)
    assert "was not written by this version of pi-infer" in "\n".join(lines)
    assert description.startswith("built from")
    description, _ = load_small(cache)
    assert description == f"compiled cache {entry}"
    assert cached_files(cache) == [entry.name], "no temporary files left behind"


def test_unwritable_cache_directory_is_a_warning(tmp_path, photo_video, start_service, notify):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # no directory can be made below a file, not even by root
    daemon = start(start_service, tmp_path, notify, base_config(blocker / "cache"),
                   "--source", str(photo_video),
                   load_model=functools.partial(load_classifier, build=build_small_model))
    daemon.wait_for(lambda e: e["event"] == "stats" and e["processed"] > 0)
    assert any(f"cannot write the model cache in {blocker / 'cache'}" in e["message"]
               for e in daemon.events), daemon.events
    daemon.stop()
    assert daemon.finish() == 0


def test_prepare_builds_the_cache_and_classify_uses_it(tmp_path, capsys):
    """The one test of the real cold start: MobileNetV2 built, compiled and written."""
    cache = tmp_path / "cache"
    path = write_config(tmp_path / "c.yaml", base_config(cache))
    result = run_cli(capsys, "prepare", "--config", str(path), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "model ready: built from" in result.stdout
    assert "model cache written" in result.stderr
    [entry] = cache.iterdir()
    assert entry.name.startswith("mobilenet_v2-") and f"torch{torch.__version__}" in entry.name
    again = run_cli(capsys, "prepare", "--config", str(path))
    assert f"model ready: compiled cache {entry}" in again.stdout
