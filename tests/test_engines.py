"""Every quantized engine this torch has gives every shared photo its documented top-1.

The engines run different kernels (x86: oneDNN and FBGEMM, chosen by instruction set; qnnpack:
the kernels a Raspberry Pi runs), so agreement here shows the labels do not hang on one CPU's
arithmetic. A failure names the photo, the label, its score and its margin over the second.

`pi-infer classify` runs in-process (each engine's compiled model lands in the session's
cache_dir); the process-wide quantized engine is put back after each.
"""

import json

import pytest
import torch

from .cli_inprocess import run_cli
from .conftest import IMAGES, LABELS, PHOTO_ORDER, WEIGHTS, write_config
from .labels import check_still

ENGINES = ["x86", "fbgemm", "qnnpack"]


@pytest.fixture
def kept_engine():
    engine = torch.backends.quantized.engine
    yield
    torch.backends.quantized.engine = engine


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_gives_the_documented_top1(tmp_path, cache_dir, capsys, kept_engine,
                                                engine):
    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"this torch build has no {engine} engine")
    config = write_config(tmp_path / "c.yaml", {
        "model": {"weights": str(WEIGHTS), "labels": str(LABELS), "cache_dir": str(cache_dir)},
        "inference": {"engine": engine, "threads": 1}})
    result = run_cli(capsys, "classify", "--json", "--config", str(config),
                     *[str(IMAGES / name) for name in PHOTO_ORDER])
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["image"].rsplit("/", 1)[-1] for row in rows] == PHOTO_ORDER
    for name, row in zip(PHOTO_ORDER, rows, strict=True):
        assert row["engine"] == engine
        check_still(name, {**row, "image": f"{name} with {engine}"})
