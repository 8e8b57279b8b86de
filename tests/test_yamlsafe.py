"""The bounded YAML loader: bombs, deep nesting, repeated keys and odd files end in one clear
ConfigError naming the file and line; ordinary files load exactly as yaml.safe_load reads them."""

import os

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pidaemon.config import yamlsafe
from pidaemon.errors import ConfigError

from .conftest import REPO
from .yaml_bombs import alias_bomb, block_nesting, flow_nesting


def refused(text: str) -> str:
    """The one-line message load_mapping refuses `text` with."""
    with pytest.raises(ConfigError) as info:
        yamlsafe.load_mapping(text, "c.yaml")
    message = str(info.value)
    assert message.startswith("c.yaml") and "\n" not in message, message
    return message


@pytest.mark.parametrize("levels", [20, 40])
def test_alias_bomb_is_refused_before_expanding(levels):
    text = alias_bomb(levels)
    assert len(text) < 1300  # 20 levels: the probe's 581-byte file
    message = refused(text)
    assert "aliases (*name) stand for more than 10000 values" in message
    line = int(message.split("line ")[1].split(":")[0])
    assert 10 <= line <= 16  # where the doubling first passes the limit


def test_aliases_within_the_limit_load_as_safe_load_does():
    text = alias_bomb(8) + "queue: &q {size: 2}\nother: *q\n"
    data, lines = yamlsafe.load_mapping(text, "c.yaml")
    assert data == yaml.safe_load(text)
    # One entry per key written in the file: aliases are not walked again.
    assert len(lines) == 8 + 2 * 8 + 1 + 3  # a0..a7, their a and b, camera, queue.size, other
    assert lines[("queue", "size")] == 10 and ("other", "size") not in lines
    assert ("camera", "a") not in lines


def test_aliases_cannot_build_depth_the_text_does_not_show():
    chain = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 40)]
    message = refused("\n".join(chain) + "\n")
    assert "nested more than 32 levels deep through aliases" in message


def test_an_alias_inside_its_own_value_is_refused():
    assert "alias *x is used inside the value it names" in refused("camera: &x {a: *x}\n")


@pytest.mark.parametrize("make", [flow_nesting, block_nesting])
def test_deep_nesting_is_refused_not_a_recursion_error(make):
    message = refused(make(600))
    assert "nested more than 32 levels deep" in message


@pytest.mark.parametrize("make", [flow_nesting, block_nesting])
def test_nesting_up_to_the_limit_is_fine(make):
    text = make(yamlsafe.MAX_DEPTH - 2)  # the root mapping, camera's value and the leaf
    data, _ = yamlsafe.load_mapping(text, "c.yaml")
    assert data == yaml.safe_load(text)
    assert "nested more than" in refused(make(yamlsafe.MAX_DEPTH - 1))


def test_deep_sequences_and_a_megabyte_of_brackets_are_refused():
    assert "nested more than 32" in refused("camera: " + "[" * 600 + "]" * 600 + "\n")
    assert "nested more than 32" in refused("[" * (yamlsafe.MAX_BYTES - 1))


def test_too_many_values_are_refused():
    text = "".join(f"k{i}: {i}\n" for i in range(yamlsafe.MAX_NODES))
    message = refused(text)
    assert f"more than {yamlsafe.MAX_NODES} values" in message and "line 5000" in message


def test_text_over_the_size_limit_is_refused():
    text = "# " + "x" * yamlsafe.MAX_BYTES + "\n"
    assert "larger than 1024 KiB" in refused(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("camera:\n  loop: true\nqueue: {size: 2}\ncamera:\n  fps: 5\n",
     "c.yaml, line 4: camera: defined again (first at line 1); merge the two sections"),
    ("camera:\n  fps: 5\n  width: 320\n  fps: 6\n",
     "c.yaml, line 4: camera.fps: defined again (first at line 2); keep only one"),
    ("camera: {fps: 5, fps: 6}\n", "c.yaml, line 1: camera.fps: defined again"),
    ("x:\n  - {a: 1, a: 2}\n", "c.yaml, line 2: x.0.a: defined again (first at line 2)"),
    ("x:\n  1: a\n  1.0: b\n", "c.yaml, line 3: x.1.0: defined again (first at line 2)"),
])
def test_a_key_given_twice_is_refused_with_both_lines(text, expected):
    assert refused(text).startswith(expected)


def test_merge_keys_may_be_overridden():
    text = "base: &b {fps: 5, loop: true}\ncamera:\n  <<: *b\n  fps: 6\n"
    data, lines = yamlsafe.load_mapping(text, "c.yaml")
    assert data == yaml.safe_load(text) and data["camera"] == {"fps": 6, "loop": True}
    assert lines[("camera", "fps")] == 4 and lines[("camera", "loop")] == 1


def test_line_map_of_the_shipped_config():
    text = (REPO / "etc" / "pi-infer.yaml").read_text()
    data, lines = yamlsafe.load_mapping(text, "pi-infer.yaml")
    assert data == yaml.safe_load(text)
    expected = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line and not line.startswith((" ", "#")):
            section = line.split(":")[0]
            expected[(section,)] = number
        elif line.startswith("  ") and not line.lstrip().startswith("#"):
            expected[(section, line.split(":")[0].strip())] = number
    assert lines == expected


def test_invalid_yaml_keeps_its_message():
    assert refused("camera:\n  device: /dev/video0\n bad indent: 1\n") == (
        "c.yaml, line 3, column 2: not valid YAML: expected <block end>, but found "
        "'<block mapping start>'")
    assert refused("a: 1\n---\nb: 2\n") == ("c.yaml, line 2, column 1: not valid YAML: but found "
                                           "another document")
    assert refused("camera: \x00\n") == ("c.yaml: not valid YAML: unacceptable character "
                                         "#x0000: special characters are not allowed")


@pytest.mark.parametrize(("text", "expected"), [
    ("camera:\n  fps: 2001-13-45\n", "line 2, column 8: not valid YAML: cannot read this "
                                     "timestamp: month must be in 1..12"),
    ("camera: {fps: !!int x}\n", "not valid YAML: cannot read this int"),
    ("camera: {fps: " + "9" * 5000 + "}\n", "cannot read this int: Exceeds the limit"),
])
def test_scalars_python_cannot_convert_are_yaml_errors(text, expected):
    message = refused(text)
    assert expected in message and "set_int_max_str_digits" not in message


def test_empty_documents():
    assert yamlsafe.load_mapping("", "c.yaml") == (None, {})
    assert yamlsafe.load_mapping("# only a comment\n", "c.yaml") == (None, {})


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=12))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(documents, st.booleans())
def test_ordinary_documents_load_as_safe_load_reads_them(doc, flow):
    text = yaml.safe_dump(doc, default_flow_style=flow)
    data, _ = yamlsafe.load_mapping(text, "c.yaml")
    assert data == yaml.safe_load(text)


def test_read_config_text(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text("camera: {fps: 5}\n")
    assert yamlsafe.read_config_text(good) == "camera: {fps: 5}\n"
    assert yamlsafe.read_config_text("/dev/null") == ""
    with pytest.raises(FileNotFoundError):
        yamlsafe.read_config_text(tmp_path / "absent.yaml")


def test_read_config_text_refuses_odd_files_without_reading_them(tmp_path):
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as file:
        file.truncate(8 << 30)  # sparse: refused from its size, never read
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # nobody writes: opening must not block
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"camera: \xff\n")
    for path, expected in [
        (huge, f"{huge}: larger than 1024 KiB, the most a config file may be"),
        (tmp_path, f"{tmp_path}: is a directory, not a config file"),
        (fifo, f"{fifo}: is not a regular file"),
        (binary, f"{binary}: not UTF-8 text (byte 8); save it as UTF-8"),
    ]:
        with pytest.raises(ConfigError) as info:
            yamlsafe.read_config_text(path)
        assert str(info.value).startswith(expected)
