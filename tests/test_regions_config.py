"""`regions:` as config.regions reads it: the mapping form and the box-alone shorthand give the
same region, and a shorthand that is no box is refused naming the region."""

from __future__ import annotations

import pytest

from pidaemon.config import parse
from pidaemon.config.regions import DEFAULT_STATE, Region, as_plain
from pidaemon.errors import ConfigError


def test_the_box_alone_is_a_region_with_the_main_model_and_default_state():
    short = parse("regions:\n  door: [0.0, 0.2, 0.5, 0.9]\n  shelf: {box: [0.5, 0, 1, 0.5]}\n",
                  "c.yaml")
    long = parse("regions:\n  door: {box: [0.0, 0.2, 0.5, 0.9]}\n"
                 "  shelf: {box: [0.5, 0, 1, 0.5]}\n", "c.yaml")
    assert short.regions == long.regions
    assert short.regions[0] == Region("door", (0.0, 0.2, 0.5, 0.9), None, DEFAULT_STATE)
    assert as_plain(short.regions)["door"]["box"] == [0.0, 0.2, 0.5, 0.9]


@pytest.mark.parametrize(("text", "expected"), [
    ("regions:\n  door: [0, 0, 1]\n", "c.yaml, line 2: regions.door: must be [x1, y1, x2, y2]"),
    ("regions:\n  door: [0, 0, 1.5, 1]\n", "regions.door: must be from 0 to 1"),
    ("regions:\n  door: {state: {consecutive: 2}}\n", "or the list alone: `door: [x1, y1"),
])
def test_a_shorthand_that_is_no_box_names_the_region(text, expected):
    with pytest.raises(ConfigError) as error:
        parse(text, "c.yaml")
    assert expected in str(error.value)
