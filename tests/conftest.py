"""Shared fixtures: the real weights, labels and photos, video files made from them, and a way
to run the daemon as a subprocess exactly as a user would."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import pytest
import yaml

from .events import EventStream

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PI_INFER_SHARED", REPO.parent / "shared")).resolve()
MODELS = SHARED / "models"
IMAGES = SHARED / "images"
WEIGHTS = MODELS / "mobilenet_v2_qnnpack_reconstructed.pth"
TORCHSCRIPT = MODELS / "mobilenet_v2_qnnpack_torchscript.pt"
LABELS = MODELS / "imagenet_classes.txt"

# The photos in the order the test videos show them, with the classes they must produce.
PHOTO_ORDER = ["grace_hopper.jpg", "chelsea.png", "coffee.png", "bird.bmp", "cat_720p.jpg"]
CAT_CLASSES = set(range(281, 286))
EXPECTED = {
    "grace_hopper.jpg": {652},  # military uniform
    "chelsea.png": CAT_CLASSES,
    "cat_720p.jpg": CAT_CLASSES,
    "coffee.png": {967},  # espresso
    "bird.bmp": {19},  # chickadee
}


def pytest_configure(config: pytest.Config) -> None:
    if not WEIGHTS.exists():
        raise pytest.UsageError(f"test assets not found in {SHARED}; set PI_INFER_SHARED")


def write_video(path: Path, photos: list[str], seconds_each: float, fps: int = 10,
                size: tuple[int, int] = (640, 480)) -> Path:
    """A real MJPG video holding each photo (letterboxed to `size`) for `seconds_each`."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for name in photos:
        image = cv2.imread(str(IMAGES / name))
        scale = min(width / image.shape[1], height / image.shape[0])
        resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
        top = (height - resized.shape[0]) // 2
        left = (width - resized.shape[1]) // 2
        frame = cv2.copyMakeBorder(resized, top, height - resized.shape[0] - top, left,
                                   width - resized.shape[1] - left, cv2.BORDER_CONSTANT)
        for _ in range(round(seconds_each * fps)):
            writer.write(frame)
    writer.release()
    return path


def shared_directory(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder for the whole run, shared by pytest-xdist's workers, or kept across runs under
    $PI_INFER_TEST_CACHE (CI keeps it)."""
    persistent = os.environ.get("PI_INFER_TEST_CACHE")
    run_root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_root = run_root.parent  # each worker's base is a folder of the run's
    directory = (Path(persistent) if persistent else run_root) / name
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@contextmanager
def first_worker_builds(directory: Path) -> Iterator[None]:
    """Held while building what `directory` caches: the first worker builds it, the others
    wait and then find it built."""
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled-model cache for the run, so every daemon start is a warm start."""
    from pidaemon.config import InferenceConfig, ModelConfig
    from pidaemon.model.classifier import load_classifier

    directory = shared_directory(tmp_path_factory, "model-cache")
    with first_worker_builds(directory):
        load_classifier(ModelConfig(weights=str(WEIGHTS), labels=str(LABELS),
                                    cache_dir=str(directory)), InferenceConfig(threads=1))
    return directory


def require_executorch() -> None:
    """Skip a module without ExecuTorch, unless PI_INFER_XNNPACK=required (make test sets it
    where the test venv installs it): then its absence fails the run instead of hiding."""
    try:
        import executorch  # noqa: F401
    except ImportError:
        if os.environ.get("PI_INFER_XNNPACK") == "required":
            pytest.fail("executorch is not installed but PI_INFER_XNNPACK=required",
                        pytrace=False)
        pytest.skip("executorch is not installed (packaging/xnnpack-requirements.txt)",
                    allow_module_level=True)


@pytest.fixture(scope="session")
def xnnpack_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache holding the xnnpack program of the shared weights, exported by pi-infer's
    own loader once per run (about a minute), or once for good under $PI_INFER_TEST_CACHE."""
    import dataclasses

    from pidaemon.config import ModelConfig
    from pidaemon.model.xnnpack.loader import load_xnnpack

    directory = shared_directory(tmp_path_factory, "xnnpack")
    model = dataclasses.replace(ModelConfig(), weights=str(WEIGHTS), cache_dir=str(directory))
    with first_worker_builds(directory):
        load_xnnpack(model, 1).close()
    return directory


@pytest.fixture(scope="session")
def photo_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The five photos, one second each, at 10 fps."""
    return write_video(tmp_path_factory.mktemp("video") / "photos.avi", PHOTO_ORDER, 1.0)


def base_config(cache_dir: Path, **sections: dict) -> dict:
    config: dict = {
        "camera": {"fps": 10},
        "model": {"weights": str(WEIGHTS), "labels": str(LABELS), "cache_dir": str(cache_dir)},
        "inference": {"threads": 1},
        "output": {"interval": 0.5},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def pi_infer(*args: str, env: dict | None = None, timeout: float = 120,
             cwd: Path = REPO, nice: int = 0) -> subprocess.CompletedProcess:
    """Run the CLI to completion, as `python -m pidaemon`; `nice` lowers its priority (and its
    children's) below the tests that time a daemon."""
    return subprocess.run([sys.executable, "-m", "pidaemon", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd,
                          preexec_fn=(lambda: os.nice(nice)) if nice else None)


class Daemon(EventStream):
    """`pi-infer run` in the background, its JSON output collected by a reader thread."""

    def __init__(self, args: list[str], env: dict | None = None) -> None:
        super().__init__()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pidaemon", "run", "--log-format", "json", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env=env, start_new_session=True)
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr_lines.extend(self.proc.stderr)

    def describe_end(self) -> str:
        return f"exit={self.proc.poll()} stderr={self.stderr[-2000:]}"

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def finish(self, timeout: float = 10) -> int:
        """Wait for exit, collect the remaining events, return the exit status."""
        code = self.proc.wait(timeout=timeout)
        while self._take(5) is not None:
            pass
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def of(self, event: str) -> list[dict]:
        return [e for e in self.events if e.get("event") == event]


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons started by a test; any still running at the end are killed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()


@pytest.fixture
def start_daemon(daemons: list[Daemon]):
    def start(*args: str, env: dict | None = None) -> Daemon:
        daemon = Daemon(list(args), env)
        daemons.append(daemon)
        return daemon
    return start


@pytest.fixture(scope="session")
def classifier(cache_dir: Path):
    """The real model, loaded once for the session's in-process pipelines."""
    from pidaemon.config import InferenceConfig, ModelConfig
    from pidaemon.model.classifier import load_classifier

    return load_classifier(ModelConfig(weights=str(WEIGHTS), labels=str(LABELS),
                                       cache_dir=str(cache_dir)), InferenceConfig(threads=1))


@pytest.fixture
def running():
    """Start pipelines and always stop them, even when a test fails."""
    started = []

    def start(pipeline):
        started.append(pipeline)
        pipeline.start()
        return pipeline

    yield start
    for pipeline in started:
        pipeline.stop()


@pytest.fixture
def start_service(classifier):
    """`pi-infer run ARGS` in-process (tests.inprocess.ServiceRun); stopped at the end. The model
    is compiled and loaded once per test process first (`classifier`), so that each Service
    loads it warm and no test's waiting for events includes the compile."""
    from .inprocess import ServiceRun

    started: list[ServiceRun] = []

    def start(*args: str, env: dict | None = None, **inject) -> ServiceRun:
        run = ServiceRun(list(args), env, **inject)
        started.append(run)
        return run
    yield start
    for run in started:
        run.close()


@pytest.fixture
def broker(tmp_path: Path):
    """A running mosquitto on loopback (tests.mqtt_broker); tests may kill and restart it."""
    from .mqtt_broker import Broker

    started = Broker(tmp_path)
    started.start()
    yield started
    started.stop()


@pytest.fixture
def subscribe():
    """`subscribe(port, login=None)`: paho subscribers to every topic, closed at the test's end."""
    from .mqtt_broker import Subscriber

    made: list[Subscriber] = []

    def make(port: int, login: tuple[str, str] | None = None) -> Subscriber:
        made.append(Subscriber(port, login))
        return made[-1]
    yield make
    for subscriber in made:
        subscriber.close()


@pytest.fixture
def mjpeg_camera():
    """A loopback network camera (plugged out at the start: call plug_in())."""
    from .mjpeg_camera import MjpegCamera

    camera = MjpegCamera()
    yield camera
    camera.unplug()


@pytest.fixture(scope="session")
def hanging_model(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`model` settings for a TorchScript model that hangs on the first camera frame."""
    from .hanging_model import write_hanging_model

    path = write_hanging_model(tmp_path_factory.mktemp("hang") / "hang.pt")
    return {"torchscript": str(path), "labels": str(LABELS), "weights": None}


def http_get(url: str) -> tuple[int, str]:
    """Status and body; HTTP errors are answers here, not exceptions."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(url: str) -> dict[str, float]:
    """Every Prometheus sample at `url`/metrics as `name{label="value",...}` -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(http_get(f"{url}/metrics")[1]):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
