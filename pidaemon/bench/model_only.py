"""The model alone: pi-infer's engines at each thread count, and LiteRT beside them."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import asdict
from importlib import metadata
from typing import Any

import cv2
import numpy as np

from pidaemon.bench.common import PI_FPS, TOP_K, Job, camera_frames
from pidaemon.bench.timing import (
    Timing,
    forward_call,
    in_new_thread,
    time_calls,
    time_interleaved,
    time_paced,
)


def model_only(job: Job, engine: str, thread_counts: tuple[int, ...], caller: str) -> dict:
    """Model latency called from `caller`: `main`; `worker`, a thread started after the main
    thread loaded the model, as the daemon does; or `worker+main team`, the same after the main
    thread ran the model with 2 threads, so that two OpenMP teams exist."""
    import torch

    from pidaemon.model.classifier import load_classifier

    classifier = load_classifier(job.config.model,
                                 dataclasses.replace(job.config.inference, engine=engine))
    frame = camera_frames(job.photos)[0]
    forward = forward_call(classifier, frame)

    def measure(threads: int) -> Timing:
        classifier.set_threads(threads)
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
        classifier.set_threads(1)
        timing = time_paced(forward, PI_FPS, job.seconds)
        rows.append({"engine": classifier.engine, "threads": 1,
                     "caller": f"main, {PI_FPS:g} fps", **asdict(timing)})
    costs = _frame_costs(classifier, frame, job.seconds) if caller == "main" else None
    classifier.close()
    return {"rows": rows, "costs": costs}


def _frame_costs(classifier: Any, frame: np.ndarray, seconds: float) -> dict[str, float]:
    """What the pipeline adds to the model for one frame, in ms."""
    import torch

    from pidaemon.model.preprocess import Normalizer, crop_and_resize

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


def versus_litert(job: Job, model_path: str, engines: tuple[str, ...]) -> dict | None:
    """The LiteRT peer (XNNPACK, int8 MobileNetV2) on the same frame, if it is installed: at one
    thread in turn with pi-infer's `engines`, then alone at one and two threads."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    import torch

    from pidaemon.model.classifier import load_classifier

    torch.set_num_threads(1)
    classifiers = [load_classifier(job.config.model, dataclasses.replace(
        job.config.inference, engine=engine, threads=1)) for engine in engines]
    frame = camera_frames(job.photos)[0]
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)[np.newaxis]

    def interpreter(threads: int) -> Any:
        loaded = Interpreter(model_path=model_path, num_threads=threads)
        loaded.allocate_tensors()
        loaded.set_tensor(loaded.get_input_details()[0]["index"], rgb)
        return loaded

    lite, *ours = time_interleaved(
        [interpreter(1).invoke, *(forward_call(c, frame) for c in classifiers)], job.seconds)
    rows = [{"engine": "litert", "threads": 1, "caller": "main, in turn", **asdict(lite)}]
    rows += [{"engine": c.engine, "threads": 1, "caller": "main, in turn", **asdict(timing)}
             for c, timing in zip(classifiers, ours, strict=True)]
    for classifier in classifiers:
        classifier.close()
    for threads in (1, 2):
        alone = time_calls(interpreter(threads).invoke, job.seconds)
        rows.append({"engine": "litert", "threads": threads, "caller": "main", **asdict(alone)})
    return {"version": metadata.version("ai-edge-litert"), "rows": rows}


