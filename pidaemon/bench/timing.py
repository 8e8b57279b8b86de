"""Timing calls fairly: in turn, paced like a camera, from a fresh thread or process."""

from __future__ import annotations

import multiprocessing
import os
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pidaemon.bench.common import T


@dataclass
class Timing:
    p50_ms: float
    fps: float  # 1 / mean latency: what a loop of calls sustains, stalls included
    cpu_cores: float  # process CPU time / elapsed: the threads really at work
    calls: int
    cpu_ms: float  # process CPU time per call: what the model alone costs per frame


def cpu_time() -> float:
    """CPU seconds of this process and of its running children: the xnnpack engine runs the
    model in a child process, whose CPU time process_time() would leave out."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path("/proc/self/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue  # the thread ended
        for child in children:
            try:
                fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


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
    cpu = cpu_time()
    started = due = time.perf_counter()
    while due - started < seconds or len(times) < 10:
        due += 1 / fps
        before = time.perf_counter()
        call()
        times.append(time.perf_counter() - before)
        time.sleep(max(0.0, due - time.perf_counter()))
    cpu_s = cpu_time() - cpu
    return Timing(round(statistics.median(times) * 1000, 3), round(len(times) / sum(times), 1),
                  round(cpu_s / sum(times), 2), len(times), round(cpu_s / len(times) * 1000, 3))


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
            cpu_before, before = cpu_time(), time.perf_counter()
            call()
            wall[i].append(time.perf_counter() - before)
            cpu[i].append(cpu_time() - cpu_before)
    return [Timing(round(statistics.median(w) * 1000, 3), round(len(w) / sum(w), 1),
                   round(sum(c) / sum(w), 2), len(w), round(sum(c) / len(c) * 1000, 3))
            for w, c in zip(wall, cpu, strict=True)]


def forward_call(classifier: Any, frame: np.ndarray) -> Callable[[], None]:
    """One model call on `frame` as the inference thread makes it (input prepared once)."""
    import torch

    from pidaemon.model.preprocess import Normalizer, crop_and_resize

    batch = Normalizer()(crop_and_resize(frame))

    def forward() -> None:
        with torch.inference_mode():
            classifier.module(batch)

    return forward


