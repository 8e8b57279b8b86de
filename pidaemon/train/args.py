"""The `train` command's arguments, kept free of heavy imports: every command builds the parser."""

from __future__ import annotations

import argparse
from pathlib import Path

from pidaemon.train.errors import TrainUsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, metavar="DATASET",
                        help="a folder with one sub-folder of images per label")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR",
                        help="folder for model.pt, labels.txt and report.json (replaced whole)")
    parser.add_argument("--config", type=Path, help="config file (model.weights, "
                        "inference.engine); the backbone is the daemon's ImageNet model")
    parser.add_argument("--min-accuracy", type=float, default=0.8, metavar="A",
                        help="held-out accuracy below which nothing is written (default 0.8)")
    parser.add_argument("--augment", type=int, default=8, metavar="N",
                        help="views per training image: the photo plus N-1 flips, crops and "
                        "brightness changes (default 8)")
    parser.add_argument("--hidden", type=int, default=0, metavar="UNITS",
                        help="a hidden layer of this many units; 0 (default) is a linear head")
    parser.add_argument("--seed", type=int, default=0, help="for the split and augmentation")


def check_arguments(args: argparse.Namespace) -> None:
    if not 0.0 <= args.min_accuracy <= 1.0:
        raise TrainUsageError(f"--min-accuracy: {args.min_accuracy:g} is not between 0 and 1")
    if not 1 <= args.augment <= 64:
        raise TrainUsageError(f"--augment: {args.augment} is not between 1 and 64")
    if not 0 <= args.hidden <= 4096:
        raise TrainUsageError(f"--hidden: {args.hidden} is not between 0 and 4096")
