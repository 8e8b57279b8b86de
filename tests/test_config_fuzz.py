"""Config fuzzing: whatever YAML a user writes, the loader returns a valid config or one clear
ConfigError, and `check-config` and `run` agree on it."""

import dataclasses

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pidaemon import config
from pidaemon.errors import EX_CONFIG, ConfigError

from .cli_inprocess import run_cli
from .conftest import WEIGHTS

KEYS = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in config.SECTIONS.items()}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
section_names = st.one_of(st.sampled_from(list(KEYS)), st.text(max_size=10))


@st.composite
def documents(draw):
    """Mostly-plausible configs: real section and key names with values of any type."""
    doc = {}
    for section in draw(st.lists(section_names, max_size=4, unique=True)):
        keys = st.one_of(st.sampled_from(KEYS.get(section, ["x"])), st.text(max_size=10))
        doc[section] = draw(st.one_of(values, st.dictionaries(keys, values, max_size=4)))
    return doc


def check(text: str) -> None:
    try:
        result = config.parse(text, "fuzz.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.yaml") and "\n" not in message
    else:
        assert isinstance(result, config.Config)
        assert config.validate(yaml.safe_load(config.to_yaml(result))) == result


@settings(max_examples=400, deadline=None)
@given(documents())
def test_structured_documents_load_or_fail_clearly(doc):
    check(yaml.safe_dump(doc))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_loads_or_fails_clearly(text):
    check(text)


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents())
def test_check_config_and_run_agree(tmp_path, cache_dir, classifier, capsys, monkeypatch, doc):
    """Same verdict and message; the model and camera are pinned so valid configs start fast
    (the session's compiled model, `classifier`, is in cache_dir). Relative paths a document
    names (collect.directory) land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    doc["model"] = {"weights": str(WEIGHTS), "cache_dir": str(cache_dir)}
    doc["camera"] = {"device": str(tmp_path / "absent.avi")}
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    checked = run_cli(capsys, "check-config", str(path))
    ran = run_cli(capsys, "run", "--config", str(path), "--duration", "0")
    if checked.returncode == EX_CONFIG:
        message = checked.stderr.strip().removeprefix("pi-infer: error: ")
        assert ran.returncode == EX_CONFIG
        assert ran.stdout.strip() == f"error: {message}"
    else:
        assert checked.returncode == 0, checked.stderr
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "ready in" in ran.stdout
