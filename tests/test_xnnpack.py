"""The `xnnpack` engine: the real MobileNetV2 weights exported to an XNNPACK int8 ExecuTorch
program (once per session, see conftest.xnnpack_cache) and run by ExecuTorch's runtime, in this
process and in the child process the daemon uses; the loader's refusals and failures.

The tests of the child process (and of the commands that start one) are marked system."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from .conftest import (
    EXPECTED,
    IMAGES,
    LABELS,
    PHOTO_ORDER,
    REPO,
    TORCHSCRIPT,
    WEIGHTS,
    base_config,
    pi_infer,
    require_executorch,
    write_config,
)
from .labels import check_still

require_executorch()

from pidaemon.config import ModelConfig  # noqa: E402
from pidaemon.errors import ModelError  # noqa: E402
from pidaemon.model.files import sha256_of  # noqa: E402
from pidaemon.model.preprocess import Normalizer, crop_and_resize  # noqa: E402
from pidaemon.model.xnnpack.cache import (  # noqa: E402
    ProgramCache,
    ProgramKey,
    ProgramUnusable,
    executorch_version,
)
from pidaemon.model.xnnpack.child import SubprocessXnnpackClassifier  # noqa: E402
from pidaemon.model.xnnpack.loader import load_xnnpack  # noqa: E402
from pidaemon.model.xnnpack.runtime import (  # noqa: E402
    XnnpackClassifier,
    runtime,
)

VARIANTS_PER_PHOTO = 60  # 300 frames in all

# Its module fixtures are built once, on one pytest-xdist worker (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("xnnpack")


def varied_frames(seed: int = 0) -> list[np.ndarray]:
    """Crops, flips and brightness changes of the shared photos, as BGR camera frames."""
    rng = np.random.default_rng(seed)
    frames = []
    for name in PHOTO_ORDER:
        image = cv2.imread(str(IMAGES / name))
        height, width = image.shape[:2]
        for _ in range(VARIANTS_PER_PHOTO):
            scale = rng.uniform(0.45, 1.0)
            h, w = max(32, int(height * scale)), max(32, int(width * scale))
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            frame = image[top:top + h, left:left + w]
            if rng.random() < 0.5:
                frame = frame[:, ::-1]
            gain = rng.uniform(0.6, 1.4)
            frames.append(cv2.convertScaleAbs(np.ascontiguousarray(frame), alpha=gain))
    return frames


@pytest.fixture(scope="module")
def weights() -> dict:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(WEIGHTS, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def program(xnnpack_cache: Path) -> Path:
    key = ProgramKey("mobilenet_v2", sha256_of(str(WEIGHTS), "w")[:16], executorch_version())
    return ProgramCache(xnnpack_cache).load(key)[0]


@pytest.fixture(scope="module")
def classifier(program: Path) -> XnnpackClassifier:
    labels = LABELS.read_text().splitlines()
    classifier = XnnpackClassifier(program, labels, f"ExecuTorch program {program}")
    assert classifier.warm_up() == len(labels) == 1000
    return classifier


@pytest.fixture(scope="module")
def reference(weights: dict):
    """torchvision's quantized MobileNetV2 with the same weights on qnnpack, as pi-infer runs it."""
    import torch
    from torchvision.models.quantization import mobilenet_v2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mobilenet_v2(weights=None, quantize=True)
        torch.backends.quantized.engine = "qnnpack"
        model.load_state_dict(weights)
    return model.eval()


def test_the_xnnpack_backend_is_registered():
    assert "XnnpackBackend" in runtime()._get_registered_backend_names()


def test_shared_photos_get_the_documented_labels(classifier):
    normalize = Normalizer()
    for name in PHOTO_ORDER:
        batch = normalize(crop_and_resize(cv2.imread(str(IMAGES / name))))
        classes, scores = classifier.top_k(batch, 5)
        assert classes[0] in EXPECTED[name], (name, classes, scores)
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    coffee = normalize(crop_and_resize(cv2.imread(str(IMAGES / "coffee.png"))))
    classes, scores = classifier.top_k(coffee, 1)
    assert classifier.labels[classes[0]] == "espresso" and scores[0] > 0.9


def test_top1_agrees_with_torchvision_on_varied_frames(classifier, reference):
    import torch

    normalize = Normalizer()
    frames = varied_frames()
    agree = 0
    for frame in frames:
        batch = normalize(crop_and_resize(frame))
        with torch.inference_mode():
            expected = int(reference(batch).argmax())
        agree += classifier.top_k(batch, 1)[0][0] == expected
    assert len(frames) == 300
    assert agree / len(frames) >= 0.97, f"top-1 agreement {agree}/{len(frames)}"


def test_thread_count_change_reloads_and_keeps_results(classifier):
    batch = Normalizer()(crop_and_resize(cv2.imread(str(IMAGES / "bird.bmp"))))
    before = classifier.module(batch)
    classifier.set_threads(2)
    assert runtime()._threadpool_get_thread_count() == 2 and classifier.threads == 2
    after = classifier.module(batch)
    classifier.set_threads(1)
    assert runtime()._threadpool_get_thread_count() == 1
    assert int(before.argmax()) == int(after.argmax()) == 19  # chickadee


def test_calls_from_several_threads_are_serialised(classifier):
    batch = Normalizer()(crop_and_resize(cv2.imread(str(IMAGES / "coffee.png"))))
    results: list[int] = []

    def classify() -> None:
        for _ in range(3):
            results.append(classifier.top_k(batch, 1)[0][0])

    threads = [threading.Thread(target=classify) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [967] * 9


@pytest.mark.parametrize("content", [b"short", b"not a flatbuffer" * 10])
def test_a_corrupt_program_is_one_clear_error(tmp_path, content):
    broken = tmp_path / "broken.pte"
    broken.write_bytes(content)
    with pytest.raises(ModelError, match=r"broken\.pte: not a loadable ExecuTorch program"):
        XnnpackClassifier(broken, ["a"], "broken")


@pytest.fixture
def child(program: Path):
    child = SubprocessXnnpackClassifier(program, LABELS.read_text().splitlines(), "program")
    yield child
    child.close()


@pytest.mark.system
def test_the_child_process_gives_the_in_process_results(child, classifier):
    assert child.warm_up() == 1000 and child.engine == "xnnpack"
    normalize = Normalizer()
    for name in PHOTO_ORDER:
        batch = normalize(crop_and_resize(cv2.imread(str(IMAGES / name))))
        assert child.top_k(batch, 5) == classifier.top_k(batch, 5)
    coffee = normalize(crop_and_resize(cv2.imread(str(IMAGES / "coffee.png"))))
    child.set_threads(2)
    assert child.threads == 2
    assert child.top_k(coffee, 1)[0] == [967]


@pytest.mark.system
def test_the_child_exits_when_closed_and_a_dead_child_is_an_error(program):
    child = SubprocessXnnpackClassifier(program, ["x"] * 1000, "program")
    process = child._child
    child.close()
    assert process.returncode == 0
    child = SubprocessXnnpackClassifier(program, ["x"] * 1000, "program")
    try:
        child._child.kill()
        child._child.wait()  # gone before we write: the broken pipe must read as its exit
        with pytest.raises(ModelError, match="the ExecuTorch process exited"):
            child.module(Normalizer()(crop_and_resize(cv2.imread(str(IMAGES / "bird.bmp")))))
        with pytest.raises(ModelError, match="the ExecuTorch process exited"):
            child.module(Normalizer()(crop_and_resize(cv2.imread(str(IMAGES / "bird.bmp")))))
    finally:
        child.close()


@pytest.mark.system
def test_a_child_dead_of_sigill_says_the_build_does_not_run_on_this_cpu(program):
    """What the aarch64 ExecuTorch 1.0.1 wheel does on a Cortex-A72 (docs/xnnpack-engine.md),
    here by signal."""
    child = SubprocessXnnpackClassifier(program, ["x"] * 1000, "program")
    try:
        os.kill(child._child.pid, signal.SIGILL)
        with pytest.raises(ModelError, match=r"died of SIGILL \(status -4\): this ExecuTorch "
                           r"build uses instructions this CPU lacks; choose another "
                           r"inference\.engine"):
            child.top_k(Normalizer()(crop_and_resize(cv2.imread(str(IMAGES / "bird.bmp")))), 1)
    finally:
        child.close()


@pytest.mark.system
def test_a_corrupt_program_in_the_child_is_one_clear_error(tmp_path):
    broken = tmp_path / "broken.pte"
    broken.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(ModelError, match=r"broken\.pte: not a loadable ExecuTorch program"):
        SubprocessXnnpackClassifier(broken, ["a"], "broken")


def test_the_program_cache_finds_its_entry_and_refuses_torn_or_foreign_ones(tmp_path, program):
    cache = ProgramCache(tmp_path / "cache")
    key = ProgramKey("mobilenet_v2", "0123456789abcdef", executorch_version())
    assert key.executorch != "none"
    with pytest.raises(ProgramUnusable, match="missing"):
        cache.load(key)
    cache.program_path(key).parent.mkdir()
    cache.program_path(key).write_bytes(program.read_bytes())
    labels = LABELS.read_text().splitlines()
    cache.describe(key, labels)
    path, loaded = cache.load(key)
    assert loaded == labels and path == cache.program_path(key)
    assert XnnpackClassifier(path, loaded, "cached").warm_up() == 1000
    other = ProgramKey("mobilenet_v2", "0123456789abcdef", "0.0.1")
    cache.description_path(other).write_bytes(cache.description_path(key).read_bytes())
    cache.program_path(other).write_bytes(program.read_bytes())
    with pytest.raises(ProgramUnusable, match="another program"):
        cache.load(other)
    with open(path, "r+b") as torn:
        torn.truncate(path.stat().st_size // 2)
    with pytest.raises(ProgramUnusable, match="cut short"):
        cache.load(key)


def model_config(tmp_path: Path, **values) -> ModelConfig:
    return dataclasses.replace(ModelConfig(), **{"cache_dir": str(tmp_path / "cache"), **values})


@pytest.mark.system
def test_the_loader_runs_the_cached_program_in_a_child(xnnpack_cache):
    classifier = load_xnnpack(model_config(xnnpack_cache.parent, weights=str(WEIGHTS),
                                           cache_dir=str(xnnpack_cache)), 2)
    try:
        assert classifier.engine == "xnnpack" and classifier.threads == 2
        assert "ExecuTorch program" in classifier.description and len(classifier.labels) == 1000
        coffee = Normalizer()(crop_and_resize(cv2.imread(str(IMAGES / "coffee.png"))))
        [(first, _), (second, _)] = classifier.top_k_batch(coffee.repeat(2, 1, 1, 1), 1)
        assert first == second == [967]
        process = classifier._child
    finally:
        classifier.close()
    assert process.returncode == 0


def test_torchscript_models_are_refused_with_the_engine_to_use(tmp_path):
    import torch

    with pytest.raises(ModelError, match=r"a quantized TorchScript model cannot be converted "
                       r"for inference\.engine: xnnpack; set inference\.engine: qnnpack or x86"):
        load_xnnpack(model_config(tmp_path, torchscript=str(TORCHSCRIPT)), 1)
    small = tmp_path / "float.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 4, 3)), str(small))
    with pytest.raises(ModelError, match=r"runs only the built-in MobileNetV2 .*calibration"):
        load_xnnpack(model_config(tmp_path, torchscript=str(small)), 1)


def test_a_program_the_runtime_refuses_is_exported_again_and_a_failed_export_is_one_error(
        tmp_path):
    """A cached program with a matching description that the runtime cannot load is exported
    again; these weights are a state_dict of another model, so the export fails fast."""
    import torch

    weights = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, weights)
    cfg = model_config(tmp_path, weights=str(weights))
    cache = ProgramCache(Path(cfg.cache_dir))
    key = ProgramKey("mobilenet_v2", sha256_of(str(weights), "w")[:16], executorch_version())
    cache.program_path(key).parent.mkdir()
    cache.program_path(key).write_bytes(b"not a flatbuffer" * 10)
    cache.describe(key, ["a"])
    with pytest.raises(ModelError, match=r"model.weights: .*other\.pth: cannot be exported for "
                       r"inference.engine: xnnpack, not torchvision's quantized MobileNetV2"):
        load_xnnpack(cfg, 1)


@pytest.mark.system
def test_without_executorch_the_daemon_names_the_install_command(tmp_path, xnnpack_cache):
    """ExecuTorch hidden from a real `pi-infer classify` (sys.modules entry None)."""
    config = write_config(tmp_path / "c.yaml", base_config(
        xnnpack_cache, inference={"engine": "xnnpack", "threads": 1}))
    result = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['executorch'] = None; "
         "from pidaemon.cli import main; sys.exit(main(sys.argv[1:]))", "classify", "--config",
         str(config), str(IMAGES / "coffee.png")], capture_output=True, text=True, timeout=120,
        cwd=REPO)
    assert result.returncode == 78, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "inference.engine: xnnpack needs ExecuTorch's runtime" in lines[0]
    assert "pip install --no-deps -r packaging/xnnpack-requirements.txt" in lines[0]


@pytest.mark.system
def test_classify_and_prepare_use_the_engine(tmp_path, xnnpack_cache):
    config = write_config(tmp_path / "c.yaml", base_config(
        xnnpack_cache, inference={"engine": "xnnpack", "threads": 1}))
    prepared = pi_infer("prepare", "--config", str(config))
    assert prepared.returncode == 0, prepared.stderr
    assert "engine xnnpack" in prepared.stdout and str(xnnpack_cache) in prepared.stdout
    result = pi_infer("classify", "--json", "--config", str(config),
                      *[str(IMAGES / name) for name in PHOTO_ORDER])
    assert result.returncode == 0, result.stderr
    for name, line in zip(PHOTO_ORDER, result.stdout.splitlines(), strict=True):
        row = json.loads(line)
        assert row["engine"] == "xnnpack"
        check_still(name, {**row, "image": f"{name} with xnnpack"})
