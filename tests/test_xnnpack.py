"""The `xnnpack` engine: the real MobileNetV2 weights exported to an XNNPACK int8 ExecuTorch
program and run by ExecuTorch's runtime. Skipped where executorch is not installed."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from pidaemon.preprocess import Normalizer, crop_and_resize

from .conftest import EXPECTED, IMAGES, LABELS, PHOTO_ORDER, TORCHSCRIPT, WEIGHTS

pytest.importorskip("executorch", reason="executorch is not installed (pi-infer[xnnpack])")

from pidaemon.errors import ModelError
from pidaemon.xnnpack_cache import ProgramCache, ProgramKey, ProgramUnusable, executorch_version
from pidaemon.xnnpack_engine import XnnpackClassifier, runtime, runtime_available
from pidaemon.xnnpack_export import export_mobilenet_v2, export_torchscript, float_mobilenet_v2
from pidaemon.xnnpack_subprocess import SubprocessXnnpackClassifier

VARIANTS_PER_PHOTO = 60  # 300 frames in all


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
def program(tmp_path_factory: pytest.TempPathFactory, weights: dict) -> Path:
    return export_mobilenet_v2(weights, tmp_path_factory.mktemp("pte") / "mobilenet_v2.pte")


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
    assert runtime_available()


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
    finally:
        child.close()


def test_a_corrupt_program_in_the_child_is_one_clear_error(tmp_path):
    broken = tmp_path / "broken.pte"
    broken.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(ModelError, match=r"broken\.pte: not a loadable ExecuTorch program"):
        SubprocessXnnpackClassifier(broken, ["a"], "broken")


def test_a_float_torchscript_model_exports_with_calibration(tmp_path, weights):
    """A user's float model (here the same network, dequantized and scripted), calibrated on ten
    frames: a calibrated export, unlike the carried-over one, only approximates the trained
    quantization (4 frames turned the chickadee into a bulbul), so the class must be in the
    top 5."""
    import torch

    source = tmp_path / "float.torchscript"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(float_mobilenet_v2(weights)), str(source))
    normalize = Normalizer()
    calibration = [normalize(crop_and_resize(frame)) for frame in varied_frames(seed=7)[::30]]
    program = export_torchscript(source, tmp_path / "float.pte", calibration)
    classifier = XnnpackClassifier(program, LABELS.read_text().splitlines(), "float")
    assert classifier.warm_up() == 1000
    for name in PHOTO_ORDER:
        batch = normalize(crop_and_resize(cv2.imread(str(IMAGES / name))))
        assert EXPECTED[name] & set(classifier.top_k(batch, 5)[0]), name


def test_a_quantized_torchscript_model_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ModelError, match="only float TorchScript models convert"):
        export_torchscript(TORCHSCRIPT, tmp_path / "q.pte", [])


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
