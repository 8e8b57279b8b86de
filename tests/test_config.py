"""Config loading: valid files, every kind of error (naming file, key and line), exit 78.

The CLI's answers are read in-process (cli_inprocess); one test proves through the real process
that a bad config is exit 78 and one line, without a traceback."""

import dataclasses

import pytest
import yaml

from pidaemon import config
from pidaemon.config import docs
from pidaemon.errors import EX_CONFIG, ConfigError

from .cli_inprocess import run_cli
from .conftest import REPO, pi_infer


def test_shipped_config_lists_every_key_with_its_default():
    shipped = yaml.safe_load((REPO / "etc" / "pi-infer.yaml").read_text())
    declared = {key.path: key.default for key in config.keys()}
    in_file = {f"{section}.{key}": value for section, keys in shipped.items()
               for key, value in keys.items()}
    assert in_file == declared
    assert config.validate(shipped) == config.Config()


def test_shipped_config_and_key_table_are_generated_from_the_declarations():
    """Every key's help and reload scope, word for word, in the file and docs/configuration.md."""
    assert docs.main(["--check"]) == 0, "run `python -m pidaemon.config.docs`"
    shipped = (REPO / "etc" / "pi-infer.yaml").read_text()
    table = (REPO / "docs" / "configuration.md").read_text()
    for key in config.keys():
        assert f"| `{key.path}` |" in table
        assert f"{key.on_reload.value} |" in table
    assert shipped.count("Reload:") == len(config.keys())


def test_every_key_declares_what_a_reload_does():
    scopes = {key.path: key.on_reload for key in config.keys()}
    assert scopes["output.interval"] is config.Reload.LIVE
    assert scopes["camera.device"] is config.Reload.CAMERA
    assert scopes["model.weights"] is config.Reload.MODEL
    assert scopes["mqtt.host"] is config.Reload.RESTART
    old = config.Config()
    new = config.parse("camera: {fps: 10}\nmodel: {top_k: 3}\n", "new.yaml")
    assert [key.path for key in config.changed_keys(old, new)] == ["camera.fps", "model.top_k"]


def test_valid_file_overrides_defaults(tmp_path):
    path = tmp_path / "pi-infer.yaml"
    path.write_text("camera:\n  device: 1\n  fps: 30\ninference: {threads: 4, engine: qnnpack}\n")
    cfg = config.load(path)
    assert cfg.camera.device == 1 and cfg.camera.fps == 30.0
    assert cfg.inference == dataclasses.replace(config.InferenceConfig(), threads=4,
                                                engine="qnnpack")
    assert cfg.model == config.ModelConfig()


def test_empty_file_means_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert config.load(path) == config.Config()


@pytest.mark.parametrize(("text", "expected"), [
    ("camera:\n  devcie: /dev/video1\n", ["line 2", "camera.devcie", "did you mean 'device'"]),
    ("camra:\n  device: 0\n", ["line 1", "camra", "did you mean 'camera'"]),
    ("queue:\n  size: zero\n", ["line 2", "queue.size", "a whole number", "'zero'"]),
    ("queue:\n  size: 0\n", ["queue.size", "at least 1"]),
    ("inference:\n  engine: turbo\n", ["inference.engine", "auto, qnnpack, x86, fbgemm"]),
    ("inference:\n  jit: 1\n", ["inference.jit", "true or false"]),
    ("inference:\n  threads: true\n", ["inference.threads", "a whole number, not true"]),
    ("inference:\n  threads: 0\n", ["line 2", "inference.threads", "at least 1, got 0"]),
    ("inference:\n  threads: -1\n", ["inference.threads", "at least 1, got -1"]),
    ("inference:\n  threads: 65\n", ["inference.threads", "at most 64"]),
    ("inference:\n  threads: two\n", ["inference.threads", "auto or a whole number, got 'two'"]),
    ("output:\n  min_score: 1.5\n", ["output.min_score", "at most 1.0"]),
    ("camera:\n  fps: null\n", ["camera.fps", "not empty"]),
    ("camera: [1, 2]\n", ["camera", "must be a mapping"]),
    ("- just\n- a list\n", ["(top level)", "mapping of sections"]),
    ("camera:\n  device: /dev/video0\n bad indent: 1\n", ["not valid YAML", "line 3"]),
    ("model:\n  torchscript: /m.pt\n", ["model.labels", "required with model.torchscript"]),
])
def test_errors_name_file_key_and_fix(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for part in expected:
        assert part in message, (part, message)


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "absent.yaml")


def test_binary_file_is_an_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00camera")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(path)


def test_source_override():
    cfg = config.Config()
    assert cfg.with_source("2").camera.device == 2
    assert cfg.with_source("clip.mp4").camera.device == "clip.mp4"
    assert cfg.with_source(None) is cfg


def test_check_config_prints_the_effective_config(tmp_path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text("model: {top_k: 3}\n")
    result = run_cli(capsys, "check-config", str(path))
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["model"]["top_k"] == 3 and effective["camera"]["fps"] == 36.0


@pytest.mark.parametrize(("threads", "code"), [("auto", 0), ("3", 0), ("0", EX_CONFIG),
                                              ("-1", EX_CONFIG), ("two", EX_CONFIG)])
def test_check_config_threads_auto_or_a_number(tmp_path, capsys, threads, code):
    path = tmp_path / "threads.yaml"
    path.write_text(f"inference:\n  threads: {threads}\n")
    result = run_cli(capsys, "check-config", str(path))
    assert result.returncode == code, result.stdout + result.stderr
    if code == 0:
        effective = yaml.safe_load(result.stdout)["inference"]["threads"]
        assert effective == (threads if threads == "auto" else int(threads))
    else:
        assert "inference.threads: must be" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["check-config"], ["run", "--config"],
                                     ["classify", "x.jpg", "--config"]])
def test_cli_exits_78_with_one_line(tmp_path, capsys, command):
    path = tmp_path / "bad.yaml"
    path.write_text("output:\n  intervall: 2\n")
    result = run_cli(capsys, *command, str(path))
    assert result.returncode == EX_CONFIG
    output = (result.stdout + result.stderr).strip()
    assert "\n" not in output, output
    assert "output.intervall: unknown key; did you mean 'interval'?" in output


@pytest.mark.system
def test_a_bad_config_ends_the_process_with_78_and_no_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("output:\n  intervall: 2\n")
    result = pi_infer("run", "--config", str(path))
    assert result.returncode == EX_CONFIG
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "\n" not in output.strip(), output
    assert output.startswith(f"error: {path}, line 2: output.intervall: unknown key; did you "
                             f"mean 'interval'?"), output
