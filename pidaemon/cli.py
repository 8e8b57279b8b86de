"""The `pi-infer` command: run, classify, check-config, prepare, bench and train.

`main()` returns an exit status. Known problems (PiInferError) are shown as one line naming the
problem and the fix, with the exit status systemd acts on: 78 (EX_CONFIG) for configuration and
model files, so the unit does not restart-loop on them. PI_INFER_DEBUG=1 shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pidaemon import __version__, earlysignals
from pidaemon import config as config_module
from pidaemon.errors import PiInferError
from pidaemon.eventlog import configure, emit

# OpenCV's and torch's C++ warnings ("can't open camera by index", "quantized tensors are
# deprecated") would bury our own clearer lines in the journal.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
# A stalled V4L2 camera would block each read for OpenCV's default 10 s; 1 s keeps the capture
# thread's heartbeat and stall detection responsive.
os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", "1")
# oneDNN's JIT on aarch64 otherwise leaves a /tmp/perf-<pid>.map file behind on every build.
os.environ.setdefault("ONEDNN_JIT_PROFILE", "0")


def _run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--config", type=Path, help=f"config file (default "
                     f"{config_module.DEFAULT_CONFIG_PATH}; built-in defaults if it is missing)")
    run.add_argument("--source", help="camera device (/dev/video0), device index or video file; "
                     "overrides camera.device")
    run.add_argument("--duration", type=float, metavar="SECONDS",
                     help="stop cleanly this many seconds after becoming ready")
    run.add_argument("--log-format", choices=("text", "json"), default="text")


def _classify_arguments(classify: argparse.ArgumentParser) -> None:
    classify.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    classify.add_argument("--config", type=Path, help="config file (model and inference keys)")
    classify.add_argument("--json", action="store_true", help="one JSON object per image")


def _check_arguments(check: argparse.ArgumentParser) -> None:
    check.add_argument("path", nargs="?", type=Path, help=f"default "
                       f"{config_module.DEFAULT_CONFIG_PATH}")


def _prepare_arguments(prepare: argparse.ArgumentParser) -> None:
    prepare.add_argument("--config", type=Path)


def _bench_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--config", type=Path)
    bench.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    bench.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    bench.add_argument("--seconds", type=float, metavar="S",
                       help="measuring time per scenario (default 6, or 1.5 with --quick)")
    bench.add_argument("--page", action="store_true", help="measure only what the live page "
                       "costs (page off, on and idle, 1 and 3 viewers)")
    bench.add_argument("--shared", type=Path, metavar="DIR", help="test assets (models/, "
                       "images/); default $PI_INFER_SHARED, else shared/ beside the checkout")


def _train_arguments(train: argparse.ArgumentParser) -> None:
    from pidaemon.train.args import add_arguments

    add_arguments(train)


def cmd_run(args: argparse.Namespace) -> int:
    from pidaemon.service import Service

    configure(args.log_format)
    cfg = config_module.load(args.config).with_source(args.source)
    service = Service(cfg, args.config if args.config else _default_path(), args.source,
                      args.duration)
    return service.run()


def _default_path() -> Path | None:
    """Reload re-reads the default file only if it existed at start."""
    path = config_module.DEFAULT_CONFIG_PATH
    return path if path.exists() else None


def cmd_classify(args: argparse.Namespace) -> int:
    import cv2

    from pidaemon.model.classifier import load_classifier
    from pidaemon.model.preprocess import Normalizer, crop_and_resize

    cfg = config_module.load(args.config)
    classifier = load_classifier(cfg.model, cfg.inference)
    normalize = Normalizer()
    status = 0
    for path in args.images:
        image = cv2.imread(str(path))
        if image is None:
            print(f"pi-infer: error: {path}: cannot read it as an image", file=sys.stderr)
            status = 1
            continue
        classes, scores = classifier.top_k(normalize(crop_and_resize(image)), cfg.model.top_k)
        labels = [classifier.labels[c] for c in classes]
        if args.json:
            print(json.dumps({"image": str(path), "classes": classes, "labels": labels,
                              "scores": [round(s, 4) for s in scores],
                              "engine": classifier.engine}))
        else:
            ranked = zip(classes, labels, scores, strict=True)
            best = ", ".join(f"{lab} ({c}) {s:.3f}" for c, lab, s in ranked)
            print(f"{path}: {best}")
    return status


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = config_module.load(args.path)
    source = args.path or (config_module.DEFAULT_CONFIG_PATH if _default_path() else
                           "built-in defaults")
    print(f"# {source}: valid; effective configuration:")
    print(config_module.to_yaml(cfg), end="")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from pidaemon.model.classifier import load_classifier

    configure("text", sys.stderr)
    cfg = config_module.load(args.config)
    classifier = load_classifier(cfg.model, cfg.inference)
    print(f"model ready: {classifier.description}, engine {classifier.engine}, "
          f"{len(classifier.labels)} classes")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pidaemon.bench.main import run_bench

    return run_bench(args)


def cmd_train(args: argparse.Namespace) -> int:
    from pidaemon.train.main import run_train

    return run_train(args)


@dataclass(frozen=True)
class Command:
    """One `pi-infer` command: what it does, its help line and arguments, and whether it
    imports torch (the guard against a torch that crashes this CPU runs first)."""

    run: Callable[[argparse.Namespace], int]
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    needs_torch: bool = True


COMMANDS = {
    "run": Command(cmd_run, "run the daemon in the foreground", _run_arguments),
    "classify": Command(cmd_classify, "print the top-k classes of still images",
                        _classify_arguments),
    "check-config": Command(cmd_check_config, "validate a config, print the effective one",
                            _check_arguments, needs_torch=False),
    "prepare": Command(cmd_prepare, "fetch the weights and build the compiled model cache "
                       "(what the service does at start)", _prepare_arguments),
    "bench": Command(cmd_bench, "measure pi-infer against the tutorial loop", _bench_arguments),
    "train": Command(cmd_train, "train your own labels from a folder of examples per label",
                     _train_arguments),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pi-infer", description="Real-time camera inference "
                                     "daemon: camera frames in, ImageNet labels out.")
    parser.add_argument("--version", action="version", version=f"pi-infer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.arguments(commands.add_parser(name, help=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":  # the service acts on signals recorded before it; others do not
        earlysignals.restore_defaults()
    try:
        command = COMMANDS[args.command]
        if command.needs_torch:
            from pidaemon.model.torch_compat import ensure_torch_runs_here

            ensure_torch_runs_here()  # before `import torch`, which is where bad wheels crash
        return command.run(args)
    except PiInferError as exc:
        if os.environ.get("PI_INFER_DEBUG"):
            raise
        report_error(args.command, exc)
        return exc.exit_code


def entry() -> None:
    """The console script: exit without the interpreter's teardown once output is flushed.

    Tearing down torch and OpenCV takes most of a second on a Pi; after a clean shutdown of
    our own threads nothing is left to release, and SIGTERM must end the process within 2 s.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed by the reader (`| head -1`); nothing to add
            pass
    os._exit(code)


def report_error(command: str, exc: PiInferError) -> None:
    """Errors of `run` go to the log (the journal); other commands print them to stderr."""
    logger = logging.getLogger("pi-infer")
    if command == "run" and logger.handlers:
        emit("error", f"error: {exc}", logging.ERROR, exit_code=exc.exit_code)
    else:
        print(f"pi-infer: error: {exc}", file=sys.stderr)
