"""The camera scenarios: the tutorial's loop and pi-infer's Pipeline fed the same simulated
camera, measured for throughput, latency, frame age and CPU."""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pidaemon.bench.common import (
    OVERLOAD_FPS,
    PI_FPS,
    TOP_K,
    WARMUP_S,
    Job,
    camera_frames,
    percentile,
)
from pidaemon.bench.simcamera import SimulatedCamera
from pidaemon.bench.timing import Timing, cpu_time, forward_call, in_new_thread, time_paced
from pidaemon.model.preprocess import IMAGENET_MEAN, IMAGENET_STD


# -- what is measured -------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    name: str
    runner: str  # "tutorial" or "pi-infer"
    engine: str  # asked for; rows show the engine it resolved to
    threads: int | None  # None: torch's default, as the tutorial leaves it
    fps: float  # the simulated camera's rate


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
        self._cpu = cpu_time()
        self._produced = self.camera.produced

    def end(self) -> None:
        self.ended_at = time.monotonic()
        self.cpu_cores = (cpu_time() - self._cpu) / (self.ended_at - self.begun_at)
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

    net = tutorial_model(job)
    if scenario.threads is not None:
        torch.set_num_threads(scenario.threads)
    preprocess = transforms.Compose([transforms.ToTensor(),
                                     transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])
    camera = SimulatedCamera(camera_frames(job.photos), scenario.fps)
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
    """pi-infer's Pipeline, the very object the service runs, reading the simulated camera."""

    from pidaemon.model.classifier import load_classifier
    from pidaemon.pipeline import Pipeline, Result
    from pidaemon.pipeline.sink import Sink

    assert scenario.threads is not None
    threads = scenario.threads
    cfg = dataclasses.replace(job.config, inference=dataclasses.replace(
        job.config.inference, engine=scenario.engine, threads=threads))
    classifier = load_classifier(cfg.model, cfg.inference)
    camera = SimulatedCamera(camera_frames(job.photos), scenario.fps)
    meter = Meter(camera)

    class Recorder(Sink):
        def on_result(self, result: Result, labels: list[str]) -> None:
            # Frame n is the n-th frame the capture thread read from the camera.
            captured = camera.captured_at[result.seq - 1]
            meter.samples.append(Sample(result.captured_at, captured, result.finished_at,
                                        result.inference_ms))

    pipeline = Pipeline(classifier, cfg, camera, [Recorder()])

    # The pipeline's reference: model-only calls at the camera's rate (back to back when the
    # model cannot keep up), from a thread like the inference thread, just before and after.
    def reference() -> Timing:
        classifier.set_threads(threads)
        return time_paced(forward_call(classifier, camera.images[0]), scenario.fps,
                          job.seconds / 4)

    before = in_new_thread(reference)
    pipeline.start()
    try:
        time.sleep(WARMUP_S)
        meter.begin()
        time.sleep(job.seconds)
        meter.end()
    finally:
        pipeline.stop()
    pipeline.raise_if_dead()
    after = in_new_thread(reference)
    pipeline.close()
    summary = meter.summary(scenario, classifier.engine, threads)
    model_cpu_ms = (before.cpu_ms + after.cpu_ms) / 2
    return {**summary,
            "model_p50_ms": round((before.p50_ms + after.p50_ms) / 2, 3),
            "model_fps": round((before.fps + after.fps) / 2, 1),
            # The model alone doing the same frames: its CPU per call at the rate achieved.
            "model_cpu_cores": round(model_cpu_ms / 1000 * summary["fps"], 3)}


def run_scenario(job: Job, scenario: Scenario) -> dict:
    runner = run_tutorial if scenario.runner == "tutorial" else run_pipeline
    return {**runner(job, scenario), "default_threads": scenario.threads is None}


# -- the whole run ----------------------------------------------------------------------------
def scenarios(auto_fps: float, qnnpack_fps: float, threads: int,
              xnnpack_fps: float | None = None) -> list[Scenario]:
    """Each side at its own default and both at the same thread count, so neither wins by
    configuration: the tutorial's default is torch's (one thread per core), pi-infer's is
    `threads` (inference.threads: auto, resolved).

    A Pi-like camera (36 fps; qnnpack, and the auto engine); a camera at least 1.5 times faster
    than qnnpack can follow (60 fps or more); throughput (auto engine at 1, 2 and `threads`
    threads) with a camera twice as fast as the model at 1 thread, so the source never limits
    it (an unpaced source would only make the capture thread spin). With `xnnpack_fps` (ExecuTorch
    installed), the xnnpack engine in the Pi-like, overload and throughput scenarios too, its
    overload camera 1.5 times faster than it.
    """
    overload = round(max(OVERLOAD_FPS, 1.5 * qnnpack_fps), 1)
    fast = round(2 * auto_fps, 1)
    same = sorted({1, threads})  # the tutorial also at pi-infer's thread counts
    return [
        Scenario("pi-like", "tutorial", "qnnpack", None, PI_FPS),
        *(Scenario("pi-like", "tutorial", "qnnpack", n, PI_FPS) for n in same),
        *(Scenario("pi-like", "pi-infer", "qnnpack", n, PI_FPS) for n in same),
        Scenario("pi-like-auto", "pi-infer", "auto", threads, PI_FPS),
        Scenario("overload", "tutorial", "qnnpack", None, overload),
        *(Scenario("overload", "tutorial", "qnnpack", n, overload) for n in same),
        *(Scenario("overload", "pi-infer", "qnnpack", n, overload) for n in same),
        Scenario("throughput", "tutorial", "qnnpack", None, fast),
        *(Scenario("throughput", "pi-infer", "auto", n, fast) for n in sorted({1, 2, threads})),
        *(_xnnpack(xnnpack_fps, threads) if xnnpack_fps else []),
    ]


def _xnnpack(model_fps: float, threads: int) -> list[Scenario]:
    overload = round(max(OVERLOAD_FPS, 1.5 * model_fps), 1)
    return [
        Scenario("pi-like-xnnpack", "pi-infer", "xnnpack", threads, PI_FPS),
        Scenario("overload-xnnpack", "pi-infer", "xnnpack", threads, overload),
        *(Scenario("throughput-xnnpack", "pi-infer", "xnnpack", n, round(2 * model_fps, 1))
          for n in sorted({1, 2, threads})),
    ]
