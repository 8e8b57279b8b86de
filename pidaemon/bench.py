"""`pi-infer bench`: pi-infer measured against the tutorial loop, LiteRT and its own targets.

One invocation measures everything side by side, so the targets are ratios taken on the same
machine in the same minutes: model-only latency (the limit), the tutorial's single loop and
pi-infer's threads fed by the same simulated V4L2 camera, LiteRT, time to READY and peak memory.
Each measurement runs in a fresh process, as the daemon and the tutorial script do: the quantized
engine is process-wide and OpenMP thread teams stay with the thread that started them, state that
one run would otherwise leave to the next (README, Performance, shows how much it matters).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import cv2
import numpy as np
import yaml

from pidaemon import config as config_module
from pidaemon.config import Config
from pidaemon.cpus import resolve_threads
from pidaemon.errors import ConfigError
from pidaemon.preprocess import IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE

REPO = Path(__file__).resolve().parents[1]
WEIGHTS_FILE = "models/mobilenet_v2_qnnpack_reconstructed.pth"
LABELS_FILE = "models/imagenet_classes.txt"
LITERT_FILE = "models/mobilenet_v2_1.0_224_quant.tflite"
PHOTO_SUFFIXES = (".jpg", ".png", ".bmp")

PI_FPS = 36.0  # what the tutorial asks a Raspberry Pi camera for
OVERLOAD_FPS = 60.0
WARMUP_S = 1.0  # first frames through a new thread are slower (TorchScript profiling, pools)
TOP_K = 5
READY_TIMEOUT_S = 180.0

# seconds: (full run, --quick)
DURATIONS = {"scenario": (6.0, 1.5), "model": (1.5, 0.5), "steady": (3.0, 1.0)}

T = TypeVar("T")


# -- what is measured -------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    name: str
    runner: str  # "tutorial" or "pi-infer"
    engine: str  # asked for; rows show the engine it resolved to
    threads: int | None  # None: torch's default, as the tutorial leaves it
    fps: float  # the simulated camera's rate


@dataclass(frozen=True)
class Job:
    """Everything a measuring process needs (picklable, sent to a spawned interpreter)."""

    config: Config
    photos: tuple[str, ...]
    seconds: float
    work: str


@dataclass
class Timing:
    p50_ms: float
    fps: float  # 1 / mean latency: what a loop of calls sustains, stalls included
    cpu_cores: float  # process CPU time / elapsed: the threads really at work
    calls: int


@dataclass
class Target:
    name: str
    measured: str  # what the ratio compares
    ratio: float | None  # None: not measured (e.g. LiteRT missing)
    limit: float
    at_most: bool  # True: ratio <= limit passes; False: ratio >= limit passes
    passed: bool | None = field(init=False)

    def __post_init__(self) -> None:
        if self.ratio is None:
            self.passed = None
        else:
            self.passed = self.ratio <= self.limit if self.at_most else self.ratio >= self.limit


# -- inputs -----------------------------------------------------------------------------------
def shared_dir(option: Path | None) -> Path | None:
    """Test assets: --shared, else $PI_INFER_SHARED, else shared/ beside a source checkout."""
    candidate = option or Path(os.environ.get("PI_INFER_SHARED", REPO.parent / "shared"))
    return candidate.resolve() if candidate.is_dir() else None


def bench_config(base: Config, shared: Path | None, cache_dir: Path) -> Config:
    """The user's config with the shared test weights (when it names none) and a private cache."""
    model = base.model
    if shared is not None and model.weights is None and model.torchscript is None:
        weights, labels = shared / WEIGHTS_FILE, shared / LABELS_FILE
        if weights.is_file():
            model = dataclasses.replace(model, weights=str(weights))
        if model.labels is None and labels.is_file():
            model = dataclasses.replace(model, labels=str(labels))
    model = dataclasses.replace(model, cache_dir=str(cache_dir), top_k=TOP_K)
    camera = dataclasses.replace(base.camera, width=INPUT_SIZE, height=INPUT_SIZE, fps=PI_FPS)
    return dataclasses.replace(base, model=model, camera=camera)


def camera_frames(photos: Sequence[str]) -> list[np.ndarray]:
    """What a camera asked for 224x224 sees: each photo centre-cropped square and scaled."""
    frames = []
    for path in photos:
        image = cv2.imread(path)
        if image is None:
            continue
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = image[top:top + side, left:left + side]
        frames.append(cv2.resize(square, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA))
    if not frames:  # no photos at hand: a fixed noise image costs the model just the same
        rng = np.random.default_rng(0)
        frames.append(rng.integers(0, 256, (INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8))
    return frames


def duration(name: str, quick: bool) -> float:
    full, short = DURATIONS[name]
    return short if quick else full


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, as the daemon's stats compute p95."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- fresh processes --------------------------------------------------------------------------
def isolated(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` in a newly spawned interpreter and return its result."""
    with multiprocessing.get_context("spawn").Pool(1, initializer=_quiet) as pool:
        return pool.apply(fn, args)


def _quiet() -> None:
    """torch's deprecation warnings about TorchScript and quantized tensors would bury the
    progress lines; the daemon silences them the same way."""
    warnings.simplefilter("ignore")


def in_new_thread(fn: Callable[[], T]) -> T:
    """Call `fn` from a fresh thread, as the inference worker calls the model."""
    box: list[T] = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join()
    return box[0]


# -- model only -------------------------------------------------------------------------------
def time_calls(call: Callable[[], object], seconds: float) -> Timing:
    return time_interleaved([call], seconds)[0]


def time_paced(call: Callable[[], object], fps: float, seconds: float) -> Timing:
    """Time `call` once per camera period, as a camera-fed loop calls it: caches and CPU have
    cooled down between calls, unlike calls back to back."""
    call()
    times: list[float] = []
    cpu = time.process_time()
    started = due = time.perf_counter()
    while due - started < seconds or len(times) < 10:
        due += 1 / fps
        before = time.perf_counter()
        call()
        times.append(time.perf_counter() - before)
        time.sleep(max(0.0, due - time.perf_counter()))
    cpu_s = time.process_time() - cpu
    return Timing(round(statistics.median(times) * 1000, 3), round(len(times) / sum(times), 1),
                  round(cpu_s / sum(times), 2), len(times))


def time_interleaved(calls: Sequence[Callable[[], object]], seconds: float) -> list[Timing]:
    """Time `calls` in turn for `seconds`: alternating makes their ratio fair even when
    other processes take the CPU in bursts."""
    for call in calls:
        for _ in range(3):
            call()
    wall: list[list[float]] = [[] for _ in calls]
    cpu: list[list[float]] = [[] for _ in calls]
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(wall[0]) < 10:
        for i, call in enumerate(calls):
            cpu_before, before = time.process_time(), time.perf_counter()
            call()
            wall[i].append(time.perf_counter() - before)
            cpu[i].append(time.process_time() - cpu_before)
    return [Timing(round(statistics.median(w) * 1000, 3), round(len(w) / sum(w), 1),
                   round(sum(c) / sum(w), 2), len(w)) for w, c in zip(wall, cpu, strict=True)]


def forward_call(classifier: Any, frame: np.ndarray) -> Callable[[], None]:
    """One model call on `frame` as the inference thread makes it (input prepared once)."""
    import torch

    from pidaemon.preprocess import Normalizer, crop_and_resize

    batch = Normalizer()(crop_and_resize(frame))

    def forward() -> None:
        with torch.inference_mode():
            classifier.module(batch)

    return forward


def model_only(job: Job, engine: str, thread_counts: tuple[int, ...], caller: str) -> dict:
    """Model latency called from `caller`: `main`; `worker`, a thread started after the main
    thread loaded the model, as the daemon does; or `worker+main team`, the same after the main
    thread ran the model with 2 threads, so that two OpenMP teams exist."""
    import torch

    from pidaemon.model import load_classifier

    classifier = load_classifier(job.config.model,
                                 dataclasses.replace(job.config.inference, engine=engine))
    frame = camera_frames(job.photos)[0]
    forward = forward_call(classifier, frame)

    def measure(threads: int) -> Timing:
        torch.set_num_threads(threads)
        return time_calls(forward, job.seconds)

    if caller == "worker+main team":
        torch.set_num_threads(2)
        time_calls(forward, 0.1)

    rows = []
    for threads in thread_counts:
        if caller == "main":
            timing = measure(threads)
        else:
            timing = in_new_thread(functools.partial(measure, threads))
        rows.append({"engine": classifier.engine, "threads": threads, "caller": caller,
                     **asdict(timing)})
    if caller == "main":
        torch.set_num_threads(1)
        timing = time_paced(forward, PI_FPS, job.seconds)
        rows.append({"engine": classifier.engine, "threads": 1,
                     "caller": f"main, {PI_FPS:g} fps", **asdict(timing)})
    costs = _frame_costs(classifier, frame, job.seconds) if caller == "main" else None
    return {"rows": rows, "costs": costs}


def _frame_costs(classifier: Any, frame: np.ndarray, seconds: float) -> dict[str, float]:
    """What the pipeline adds to the model for one frame, in ms."""
    import torch

    from pidaemon.preprocess import Normalizer, crop_and_resize

    normalize = Normalizer()
    rgb = crop_and_resize(frame)
    with torch.inference_mode():
        logits = classifier.module(normalize(rgb))
    short = seconds / 4
    return {
        "crop_resize_ms": time_calls(lambda: crop_and_resize(frame), short).p50_ms,
        "normalize_ms": time_calls(lambda: normalize(rgb), short).p50_ms,
        "top_k_ms": time_calls(lambda: logits.float().softmax(-1)[0].topk(TOP_K), short).p50_ms,
    }


def versus_litert(job: Job, model_path: str) -> dict | None:
    """The LiteRT peer (XNNPACK, int8 MobileNetV2) on the same frame, if it is installed: at one
    thread in turn with the torch model (auto engine), then alone at one and two threads."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    import torch

    from pidaemon.model import load_classifier

    torch.set_num_threads(1)
    classifier = load_classifier(job.config.model,
                                 dataclasses.replace(job.config.inference, engine="auto"))
    frame = camera_frames(job.photos)[0]
    forward = forward_call(classifier, frame)
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)[np.newaxis]

    def interpreter(threads: int) -> Any:
        loaded = Interpreter(model_path=model_path, num_threads=threads)
        loaded.allocate_tensors()
        loaded.set_tensor(loaded.get_input_details()[0]["index"], rgb)
        return loaded

    lite, ours = time_interleaved([interpreter(1).invoke, forward], job.seconds)
    rows = [{"engine": "litert", "threads": 1, "caller": "main, in turn", **asdict(lite)},
            {"engine": classifier.engine, "threads": 1, "caller": "main, in turn",
             **asdict(ours)}]
    for threads in (1, 2):
        alone = time_calls(interpreter(threads).invoke, job.seconds)
        rows.append({"engine": "litert", "threads": threads, "caller": "main", **asdict(alone)})
    return {"version": metadata.version("ai-edge-litert"), "rows": rows}


# -- the camera scenarios ---------------------------------------------------------------------
class Sample(NamedTuple):
    read_at: float  # the camera read returned it
    captured_at: float  # the sensor produced it
    finished_at: float  # its top-k was known
    infer_ms: float  # time in the inference step (the model, its input and output)


class Meter:
    """A measurement window: results, CPU time and camera frames between `begin` and `end`."""

    def __init__(self, camera: Any) -> None:
        self.camera = camera
        self.samples: list[Sample] = []
        self.begun_at = self.ended_at = 0.0
        self._cpu = self._produced = 0.0
        self.cpu_cores = 0.0
        self.produced = 0

    def begin(self) -> None:
        self.begun_at = time.monotonic()
        self._cpu = time.process_time()
        self._produced = self.camera.produced

    def end(self) -> None:
        self.ended_at = time.monotonic()
        self.cpu_cores = (time.process_time() - self._cpu) / (self.ended_at - self.begun_at)
        self.produced = int(self.camera.produced - self._produced)

    def summary(self, scenario: Scenario, engine: str, threads: int) -> dict:
        done = [s for s in self.samples if self.begun_at <= s.finished_at <= self.ended_at]
        if not done:
            raise RuntimeError(f"{scenario.name}/{scenario.runner}: no result in the window")
        latency = [(s.finished_at - s.read_at) * 1000 for s in done]
        age = [(s.finished_at - s.captured_at) * 1000 for s in done]
        seconds = self.ended_at - self.begun_at
        return {"scenario": scenario.name, "runner": scenario.runner, "engine": engine,
                "threads": threads, "camera_fps": round(scenario.fps, 1),
                "seconds": round(seconds, 2), "fps": round(len(done) / seconds, 1),
                "latency_p50_ms": round(statistics.median(latency), 2),
                "latency_p95_ms": round(percentile(latency, 0.95), 2),
                "age_p50_ms": round(statistics.median(age), 2),
                "age_p95_ms": round(percentile(age, 0.95), 2),
                "infer_p50_ms": round(statistics.median(s.infer_ms for s in done), 2),
                "cpu_cores": round(self.cpu_cores, 3), "frames": self.produced,
                "processed": len(done), "dropped": max(0, self.produced - len(done))}


def tutorial_model(job: Job) -> Any:
    """The tutorial's model: torchvision's quantized MobileNetV2, scripted, for qnnpack.

    Built once and saved, so later runs skip torchvision's build (start-up is not measured here).
    """
    import torch

    saved = Path(job.work) / "tutorial-qnnpack.pt"
    torch.backends.quantized.engine = "qnnpack"
    if saved.exists():
        return torch.jit.load(str(saved))
    from torchvision.models import quantization

    weights = job.config.model.weights
    net = quantization.mobilenet_v2(weights=None if weights else "DEFAULT", quantize=True)
    torch.backends.quantized.engine = "qnnpack"  # the builder sets it too; keep it explicit
    if weights:
        net.load_state_dict(torch.load(weights, weights_only=True))
    net = torch.jit.script(net.eval())
    torch.jit.save(net, str(saved))
    return net


def run_tutorial(job: Job, scenario: Scenario) -> dict:
    """The tutorial's loop, faithfully: read, BGR->RGB, ToTensor/Normalize, model, in turn."""
    import torch
    from torchvision import transforms

    from pidaemon.simcamera import SimulatedCamera

    net = tutorial_model(job)
    preprocess = transforms.Compose([transforms.ToTensor(),
                                     transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])
    camera = SimulatedCamera(job.config.camera, camera_frames(job.photos), scenario.fps)
    camera.open()
    meter = Meter(camera)
    begin_at = time.monotonic() + WARMUP_S
    end_at = begin_at + job.seconds
    with torch.no_grad():
        while True:
            ok, image = camera.read()
            read_at = time.monotonic()
            if not ok or camera.last is None:
                raise RuntimeError("the simulated camera stalled")
            image = image[:, :, [2, 1, 0]]
            input_batch = preprocess(image).unsqueeze(0)
            output = net(input_batch)
            output[0].softmax(dim=0).topk(TOP_K)
            now = time.monotonic()
            meter.samples.append(Sample(read_at, camera.last.captured_at, now,
                                        (now - read_at) * 1000))
            if not meter.begun_at and now >= begin_at:
                meter.begin()
            elif now >= end_at:
                meter.end()
                break
    camera.release()
    return meter.summary(scenario, "qnnpack", torch.get_num_threads())


def run_pipeline(job: Job, scenario: Scenario) -> dict:
    """pi-infer's capture, inference and results threads, built and started as the service
    does, reading the simulated camera."""
    import torch

    from pidaemon.capture import CaptureWorker, Frame
    from pidaemon.framequeue import DropOldestQueue
    from pidaemon.inference import InferenceWorker, LiveSettings, Result
    from pidaemon.model import load_classifier
    from pidaemon.results import Counters, ResultsWorker
    from pidaemon.service import RESULTS_BUFFER
    from pidaemon.simcamera import SimulatedCamera

    cfg = job.config
    assert scenario.threads is not None
    inference_cfg = dataclasses.replace(cfg.inference, engine=scenario.engine,
                                        threads=scenario.threads)
    classifier = load_classifier(cfg.model, inference_cfg)
    frames: DropOldestQueue[Frame] = DropOldestQueue(cfg.queue.size)
    results: DropOldestQueue[Result] = DropOldestQueue(RESULTS_BUFFER)
    settings = LiveSettings(scenario.threads, cfg.model.top_k, cfg.inference.max_consecutive_errors)
    camera = SimulatedCamera(cfg.camera, camera_frames(job.photos), scenario.fps)
    meter = Meter(camera)

    def on_result(result: Result) -> None:
        # Frame n is the n-th frame the capture thread read from the camera.
        captured = camera.captured_at[result.seq - 1]
        meter.samples.append(Sample(result.captured_at, captured, result.finished_at,
                                    result.inference_ms))

    inference = InferenceWorker(classifier, frames, results, settings)
    capture = CaptureWorker(cfg.camera, frames, capture=camera)

    def counters() -> Counters:
        return Counters(captured=capture.captured, processed=inference.processed,
                        dropped=frames.dropped, bad_frames=capture.bad_frames,
                        failed_frames=inference.failed_frames)

    results_worker = ResultsWorker(results, lambda: classifier.labels, counters, cfg.output,
                                   lambda _stats: None, on_result)
    # The pipeline's reference: model-only calls at the camera's rate (back to back when the
    # model cannot keep up), from a thread like the inference thread, just before and after.
    threads = scenario.threads

    def reference() -> Timing:
        torch.set_num_threads(threads)
        return time_paced(forward_call(classifier, camera.images[0]), scenario.fps,
                          job.seconds / 4)

    before = in_new_thread(reference)
    workers = (results_worker, inference, capture)
    for worker in workers:
        worker.start()
    try:
        time.sleep(WARMUP_S)
        meter.begin()
        time.sleep(job.seconds)
        meter.end()
    finally:
        frames.close()
        for worker in (capture, inference, results_worker):
            worker.stop()
            if worker is inference:
                results.close()
            worker.join(5)
    failed = [w for w in workers if w.error is not None]
    if failed:
        raise RuntimeError(f"the {failed[0].name} thread failed: {failed[0].error}")
    after = in_new_thread(reference)
    return {**meter.summary(scenario, classifier.engine, threads),
            "model_p50_ms": round((before.p50_ms + after.p50_ms) / 2, 3),
            "model_fps": round((before.fps + after.fps) / 2, 1)}


def run_scenario(job: Job, scenario: Scenario) -> dict:
    runner = run_tutorial if scenario.runner == "tutorial" else run_pipeline
    return runner(job, scenario)


# -- start-up and memory ----------------------------------------------------------------------
def write_video(path: Path, frames: list[np.ndarray], fps: float, seconds: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps,
                             (INPUT_SIZE, INPUT_SIZE))
    for i in range(round(fps * seconds)):
        writer.write(frames[i * len(frames) // round(fps * seconds)])
    writer.release()
    return path


def daemon_config(cfg: Config, cache_dir: Path, video: Path) -> dict:
    model = cfg.model
    return {
        "camera": {"device": str(video), "fps": PI_FPS, "loop": True},
        "inference": {"engine": cfg.inference.engine, "threads": cfg.inference.threads},
        "model": {"weights": model.weights, "torchscript": model.torchscript,
                  "labels": model.labels, "cache_dir": str(cache_dir)},
    }


def proc_status(pid: int, key: str) -> float:
    """A /proc/PID/status value in MB (VmHWM: peak resident memory)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def start_daemon(config_path: Path, work: Path, steady_s: float) -> dict:
    """`pi-infer run` to READY=1 (on a NOTIFY_SOCKET of our own), then steady-state memory."""
    notify_path = work / "notify.sock"
    notify_path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        log_path = work / "daemon.log"
        log = log_path.open("w")
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "pidaemon", "run", "--config",
                                 str(config_path), "--log-format", "json"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            ready_s = _wait_ready(notify, proc, started, log_path)
            time.sleep(steady_s)
            peak = proc_status(proc.pid, "VmHWM")
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    return {"ready_s": round(ready_s, 3), "peak_rss_mb": round(peak, 1),
            "torchvision_loaded": "/torchvision/" in maps, "exit_code": proc.returncode}


def _wait_ready(notify: socket.socket, proc: subprocess.Popen[bytes], started: float,
                log: Path) -> float:
    while (left := started + READY_TIMEOUT_S - time.monotonic()) > 0:
        notify.settimeout(min(left, 0.5))
        try:
            message = notify.recv(4096)
        except TimeoutError:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").splitlines()[-5:]
                raise RuntimeError(f"pi-infer run exited with {proc.returncode} before READY: "
                                   + " / ".join(tail)) from None
            continue
        if b"READY=1" in message.split(b"\n"):
            return time.monotonic() - started
    raise RuntimeError(f"pi-infer run not READY within {READY_TIMEOUT_S:g} s")


def bare_import() -> dict:
    """A process that only imports torch and cv2: the floor for start-up time and memory."""
    code = ("import time; t = time.monotonic(); import torch, cv2; "
            "print(time.monotonic() - t); print(open('/proc/self/status').read())")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    total = time.monotonic() - started
    lines = out.splitlines()
    peak = next(int(x.split()[1]) for x in lines if x.startswith("VmHWM:")) / 1024
    return {"import_s": round(float(lines[0]), 3), "process_s": round(total, 3),
            "peak_rss_mb": round(peak, 1)}


def startup(cfg: Config, frames: list[np.ndarray], work: Path, steady_s: float) -> dict:
    video = write_video(work / "camera.avi", frames, PI_FPS, 2.0)
    cache_dir = work / "daemon-cache"  # empty: the first start is cold
    config_path = work / "daemon.yaml"
    config_path.write_text(yaml.safe_dump(daemon_config(cfg, cache_dir, video)))
    cold = start_daemon(config_path, work, steady_s)
    warm = start_daemon(config_path, work, steady_s)
    return {"cold": cold, "warm": warm, "bare": bare_import()}


# -- the whole run ----------------------------------------------------------------------------
def scenarios(auto_fps: float, qnnpack_fps: float, threads: int) -> list[Scenario]:
    """A Pi-like camera (36 fps; qnnpack at 1 thread, and the auto engine); a camera at least
    1.5 times faster than qnnpack can follow (60 fps or more); throughput (auto engine at 1
    and `threads` threads) with a camera twice as fast as the model at 1 thread, so the source
    never limits it (an unpaced source would only make the capture thread spin). The tutorial
    keeps torch's default thread count."""
    overload = round(max(OVERLOAD_FPS, 1.5 * qnnpack_fps), 1)
    fast = round(2 * auto_fps, 1)
    auto_threads = sorted({1, threads})
    return [
        Scenario("pi-like", "tutorial", "qnnpack", None, PI_FPS),
        Scenario("pi-like", "pi-infer", "qnnpack", 1, PI_FPS),
        Scenario("pi-like-auto", "pi-infer", "auto", 1, PI_FPS),
        Scenario("overload", "tutorial", "qnnpack", None, overload),
        Scenario("overload", "pi-infer", "qnnpack", 1, overload),
        Scenario("throughput", "tutorial", "qnnpack", None, fast),
        *(Scenario("throughput", "pi-infer", "auto", n, fast) for n in auto_threads),
    ]


def find_row(rows: list[dict], **match: object) -> dict:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def evaluate(report: dict) -> list[Target]:
    """pi-infer's performance targets, each as a ratio of two numbers from this run."""
    runs = report["scenarios"]
    auto = report["auto_engine"]
    targets = []

    ratio = None
    if report["litert"]:
        peer = report["litert"]["rows"]
        ratio = _ratio(find_row(peer, engine="litert", caller="main, in turn")["p50_ms"],
                       find_row(peer, engine=auto, caller="main, in turn")["p50_ms"])
    targets.append(Target(
        "model-vs-litert", f"{auto} model-only fps / LiteRT fps, 1 thread, timed in turn (p50)",
        ratio, 1.8, False))

    best = max((r for r in runs if r["scenario"] == "throughput" and r["runner"] == "pi-infer"),
               key=lambda r: r["fps"])
    targets.append(Target(
        "throughput", f"pi-infer fps / model-only fps, {auto}, {best['threads']} thread(s), "
        f"model timed back to back in the same process just before and after",
        _ratio(best["fps"], best["model_fps"]), 0.95, False))
    for name in ("pi-like", "pi-like-auto"):
        run = find_row(runs, scenario=name, runner="pi-infer")
        targets.append(Target(
            f"{name}-latency", f"pi-infer latency p50 / model-only p50, {run['engine']}, "
            f"1 thread, both at {PI_FPS:g} fps",
            _ratio(run["latency_p50_ms"], run["model_p50_ms"]), 1.2, True))
    run = find_row(runs, scenario="pi-like-auto", runner="pi-infer")
    targets.append(Target("pi-like-auto-cpu", f"CPU cores used at {PI_FPS:g} fps, {auto}",
                          run["cpu_cores"], 0.3, True))

    tutorial = find_row(runs, scenario="overload", runner="tutorial")
    pipeline = find_row(runs, scenario="overload", runner="pi-infer")
    targets.append(Target("overload-age", "tutorial frame age p95 / pi-infer frame age p95, "
                          f"qnnpack, camera at {pipeline['camera_fps']:g} fps",
                          _ratio(tutorial["age_p95_ms"], pipeline["age_p95_ms"]), 3.0, False))

    warm = report["startup"]["warm"]
    targets.append(Target("warm-start", "seconds to READY with the cache warm (limit in s)",
                          warm["ready_s"], 2.0, True))
    targets.append(Target("warm-start-no-torchvision", "torchvision loaded at steady state "
                          "(0 = no)", float(warm["torchvision_loaded"]), 0.0, True))
    extra = warm["peak_rss_mb"] - report["startup"]["bare"]["peak_rss_mb"]
    targets.append(Target("peak-rss", "MB of peak RSS above a bare `import torch, cv2` "
                          "(limit in MB)", round(extra, 1), 60.0, True))
    return targets


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3)


def measure(job: Job, cfg: Config, litert_model: Path | None, quick: bool,
            progress: Callable[[str], None]) -> dict:
    work = Path(job.work)
    steady = duration("steady", quick)
    progress("start-up: cold, then warm (spawning pi-infer run)")
    report: dict[str, Any] = {"startup": startup(cfg, camera_frames(job.photos), work, steady)}
    # Later processes reuse the cache the cold start filled (and add the qnnpack entry).
    model_job = dataclasses.replace(job, seconds=duration("model", quick))
    progress("model only")
    callers = ("main", "worker") if quick else ("main", "worker", "worker+main team")
    threads, _ = resolve_threads(cfg.inference.threads)
    thread_counts = tuple(sorted({1, 2, threads}))
    model_rows: list[dict] = []
    for engine in ("auto", "qnnpack"):
        for caller in callers:
            result = isolated(model_only, model_job, engine, thread_counts, caller)
            model_rows += result["rows"]
            report.setdefault("frame_costs_ms", result["costs"])
    report["model_only"] = model_rows
    report["auto_engine"] = model_rows[0]["engine"]
    report["litert"] = None
    if litert_model is not None:
        progress("LiteRT")
        report["litert"] = isolated(versus_litert, model_job, str(litert_model))
    auto = find_row(model_rows, engine=report["auto_engine"], threads=1, caller="main")
    qnnpack = find_row(model_rows, engine="qnnpack", threads=1, caller="main")
    runs = []
    for scenario in scenarios(auto["fps"], qnnpack["fps"], threads):
        progress(f"{scenario.name}: {scenario.runner}")
        runs.append(isolated(run_scenario, job, scenario))
    report["scenarios"] = runs
    return report


def conditions(quick: bool, seconds: float, load_before: tuple[float, ...]) -> dict:
    return {"machine": platform.machine(), "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(), "python": platform.python_version(),
            "torch": metadata.version("torch"), "opencv": cv2.__version__,
            "quick": quick, "scenario_seconds": seconds, "nice": os.nice(0),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    names = [line.split(":", 1)[1].strip() for line in text.splitlines()
             if line.startswith(("model name", "Model"))]
    return names[0] if names else platform.processor()


def run_bench(args: argparse.Namespace) -> int:
    """`pi-infer bench`: measure, print the table, optionally write JSON. Exit 0 once measured,
    whatever the targets say (a noisy machine must not fail a build)."""
    quick = bool(args.quick)
    base = config_module.load(args.config)
    shared = shared_dir(args.shared)
    seconds = args.seconds or duration("scenario", quick)
    if seconds <= 0:
        raise ConfigError("--seconds must be positive")
    images = shared / "images" if shared else None
    photos = tuple(sorted(str(p) for p in images.iterdir() if p.suffix.lower() in
                          PHOTO_SUFFIXES)) if images and images.is_dir() else ()
    litert_model = shared / LITERT_FILE if shared and (shared / LITERT_FILE).is_file() else None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pi-infer-bench-") as tmp:
        work = Path(tmp)
        cfg = bench_config(base, shared, work / "daemon-cache")
        job = Job(cfg, photos, seconds, tmp)
        report = measure(job, cfg, litert_model, quick,
                         lambda what: print(f"bench: {what}", file=sys.stderr, flush=True))
    report["conditions"] = conditions(quick, seconds, load_before)
    report["targets"] = [asdict(t) for t in evaluate(report)]
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


# -- the table --------------------------------------------------------------------------------
def render(report: dict) -> str:
    c = report["conditions"]
    lines = [f"pi-infer bench: {c['machine']} ({c['cpu_model']}), {c['cpus']} CPUs, torch "
             f"{c['torch']}, {c['scenario_seconds']:g} s per scenario, nice {c['nice']}, load "
             f"average {c['loadavg_before'][0]:.2f} -> {c['loadavg_after'][0]:.2f}", "",
             f"{'model only (int8 MobileNetV2, 224x224)':<40}{'thr':>3}  {'called from':<17}"
             f"{'p50 ms':>7}{'fps':>8}{'cpu':>6}"]
    rows = list(report["model_only"])
    if report["litert"]:
        version = report["litert"]["version"]
        rows += [{**r, "engine": f"LiteRT {version}" if r["engine"] == "litert" else r["engine"]}
                 for r in report["litert"]["rows"]]
    for r in rows:
        lines.append(f"  {r['engine']:<38}{r['threads']:>3}  {r['caller']:<17}"
                     f"{r['p50_ms']:>7.2f}{r['fps']:>8.1f}{r['cpu_cores']:>6.2f}")
    costs = report["frame_costs_ms"]
    lines.append("  per frame besides the model: " + ", ".join(
        f"{k.removesuffix('_ms').replace('_', ' ')} {v:.3f} ms" for k, v in costs.items()))
    lines += ["", f"{'scenario':<13}{'runner':<9}{'engine':<8}{'thr':>3}{'camera':>7}{'fps':>7}"
              f"{'model':>7}{'infer':>7}{'lat p50':>8}{'p95':>7}{'age p50':>8}{'p95':>7}"
              f"{'cpu':>6}{'dropped':>8}"]
    for r in report["scenarios"]:
        model = f"{r['model_p50_ms']:.1f}" if "model_p50_ms" in r else "-"
        lines.append(f"{r['scenario']:<13}{r['runner']:<9}{r['engine']:<8}{r['threads']:>3}"
                     f"{r['camera_fps']:>7.0f}{r['fps']:>7.1f}{model:>7}{r['infer_p50_ms']:>7.1f}"
                     f"{r['latency_p50_ms']:>8.1f}{r['latency_p95_ms']:>7.1f}"
                     f"{r['age_p50_ms']:>8.1f}{r['age_p95_ms']:>7.1f}{r['cpu_cores']:>6.2f}"
                     f"{r['dropped']:>8}")
    s = report["startup"]
    lines += ["", "(ms. model: model-only p50 at the camera's rate, timed in the same process "
              "before and after; infer: the inference step per frame; lat: camera read to "
              "result; age: sensor capture to result. cpu: process CPU time / wall time)", "",
              f"start-up to READY: cold {s['cold']['ready_s']:.2f} s, warm "
              f"{s['warm']['ready_s']:.2f} s (torchvision "
              f"{'loaded' if s['warm']['torchvision_loaded'] else 'not loaded'} when warm); "
              f"bare `import torch, cv2` {s['bare']['import_s']:.2f} s",
              f"peak RSS: warm daemon {s['warm']['peak_rss_mb']:.0f} MB, cold "
              f"{s['cold']['peak_rss_mb']:.0f} MB, bare import {s['bare']['peak_rss_mb']:.0f} MB",
              "", "targets"]
    for t in report["targets"]:
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[t["passed"]]
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
        sign = "<=" if t["at_most"] else ">="
        lines.append(f"  {t['name']:<26}{ratio:>8} {sign} {t['limit']:<5g} {verdict:<5} "
                     f"{t['measured']}")
    return "\n".join(lines)
