"""Hostile and odd config files through the CLI: each ends promptly in exit 78 and one line
that names the file and the fix, `check-config` refuses what `run` would, and a reload of such a
file keeps the running daemon and its configuration.

The CLI runs in-process (cli_inprocess); the system tests prove through the real process that a
bomb and an unusable password file end in exit 78 and one line, without a traceback."""

import os

import pytest
import yaml

from pidaemon.errors import EX_CONFIG

from .cli_inprocess import run_cli
from .conftest import base_config, pi_infer, write_config
from .yaml_bombs import alias_bomb, block_nesting, flow_nesting

# Generous: a config bomb took 22 s and 2 GB before limits; refused ones take well under 1 s.
PROMPTLY = 60


@pytest.fixture
def refused_by_cli(capsys, monkeypatch):
    """`refused_by_cli(*args)`: run the CLI; it must finish, exit 78 and print exactly one line.
    CREDENTIALS_DIRECTORY is unset unless the test sets it."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)

    def refused(*args: str) -> str:
        result = run_cli(capsys, *args, timeout=PROMPTLY)
        output = (result.stdout + result.stderr).strip()
        assert result.returncode == EX_CONFIG, output
        assert "\n" not in output, output
        return output
    return refused


def refused_by_the_process(*args: str, env: dict | None = None) -> str:
    """The same through a real `python -m pidaemon`, which must also print no traceback."""
    result = pi_infer(*args, env=env, timeout=PROMPTLY)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == EX_CONFIG, output
    assert "Traceback" not in output and "\n" not in output, output
    return output


@pytest.mark.parametrize(("text", "expected"), [
    (alias_bomb(20), "line 11: aliases (*name) stand for more than 10000 values"),
    (alias_bomb(40), "line 11: aliases (*name) stand for more than 10000 values"),
    (flow_nesting(600), "line 1: nested more than 32 levels deep"),
    (block_nesting(600), "line 32: nested more than 32 levels deep"),
    ("camera:\n  loop: true\nqueue: {size: 2}\ncamera:\n  fps: 5\n",
     "line 4: camera: defined again (first at line 1); merge the two sections"),
    ("camera:\n  device: 99999999999999999999\n",
     "line 2: camera.device: must be at most 1023, got 99999999999999999999"),
    ("camera:\n  device: -1\n", "line 2: camera.device: must be at least 0"),
], ids=["bomb20", "bomb40", "flow600", "block600", "duplicate", "device-index", "device-neg"])
@pytest.mark.parametrize("command", [["check-config"], ["run", "--config"]])
def test_hostile_config_exits_78_with_one_line(tmp_path, refused_by_cli, command, text,
                                               expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert f"{path}, {expected}" in refused_by_cli(*command, str(path))


@pytest.mark.system
def test_a_config_bomb_ends_the_process_promptly_with_78(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(alias_bomb(40))
    assert (f"{path}, line 11: aliases (*name) stand for more than 10000 values"
            in refused_by_the_process("run", "--config", str(path)))


def test_odd_files_as_config(tmp_path, refused_by_cli):
    assert (f"{tmp_path}: is a directory, not a config file"
            in refused_by_cli("check-config", str(tmp_path)))
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as file:
        file.truncate(4 << 30)
    assert f"{huge}: larger than 1024 KiB" in refused_by_cli("run", "--config", str(huge))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert f"{fifo}: is not a regular file" in refused_by_cli("check-config", str(fifo))


def test_source_index_out_of_range(tmp_path, refused_by_cli):
    path = write_config(tmp_path / "c.yaml", {"queue": {"size": 1}})
    output = refused_by_cli("run", "--config", str(path), "--source", "99999999999999999999")
    assert "--source: camera.device: must be at most 1023" in output


def test_numbers_with_an_exponent_are_numbers(tmp_path, capsys, refused_by_cli):
    path = tmp_path / "c.yaml"
    path.write_text("camera:\n  fps: 1e1\n  stall_timeout: 1.5e3\noutput: {interval: 5E-1}\n")
    result = run_cli(capsys, "check-config", str(path), timeout=PROMPTLY)
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["camera"]["fps"] == 10.0 and effective["camera"]["stall_timeout"] == 1500.0
    assert effective["output"]["interval"] == 0.5
    path.write_text("queue:\n  size: 1e1\n")  # a whole number is still asked for as one
    assert "queue.size: must be a whole number, got '1e1'" in refused_by_cli("check-config",
                                                                             str(path))


def mqtt_config(tmp_path, cache_dir, password_file: str):
    return write_config(tmp_path / "c.yaml", base_config(
        cache_dir, camera={"device": str(tmp_path / "absent.avi")},
        mqtt={"host": "127.0.0.1", "username": "camera", "password_file": password_file}))


def environment(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    return {**env, **extra}


@pytest.mark.parametrize(("name", "setup", "expected"), [
    ("absent", None, "mqtt.password_file: cannot read {path}: No such file or directory"),
    ("empty", b"", "mqtt.password_file: {path} is empty; write the password into it"),
    ("newline", b"\n", "mqtt.password_file: {path} is empty"),
    ("dir", "dir", "mqtt.password_file: cannot read {path}: not a regular file"),
])
def test_password_file_that_run_cannot_use_fails_check_config_too(tmp_path, cache_dir,
                                                                   refused_by_cli, name, setup,
                                                                   expected):
    secret = tmp_path / name
    if setup == "dir":
        secret.mkdir()
    elif setup is not None:
        secret.write_bytes(setup)
    path = mqtt_config(tmp_path, cache_dir, str(secret))
    checked = refused_by_cli("check-config", str(path))
    ran = refused_by_cli("run", "--config", str(path), "--duration", "0")
    assert expected.format(path=secret) in checked
    assert ran == f"error: {checked.removeprefix('pi-infer: error: ')}"


@pytest.mark.system
def test_a_password_file_run_cannot_use_ends_the_process_with_78(tmp_path, cache_dir):
    secret = tmp_path / "absent"
    path = mqtt_config(tmp_path, cache_dir, str(secret))
    ran = refused_by_the_process("run", "--config", str(path), "--duration", "0",
                                 env=environment())
    assert ran.startswith(f"error: {path}, ")
    assert ran.endswith(f"mqtt.password_file: cannot read {secret}: No such file or directory")


def test_bare_password_file_name_needs_the_credentials_directory(tmp_path, cache_dir, capsys,
                                                                  monkeypatch, refused_by_cli):
    path = mqtt_config(tmp_path, cache_dir, "mqtt-password")
    output = refused_by_cli("check-config", str(path))
    assert "mqtt.password_file: 'mqtt-password' is a bare name, looked up in " \
           "$CREDENTIALS_DIRECTORY, which is not set here" in output
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    result = run_cli(capsys, "check-config", str(path), timeout=PROMPTLY)
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout


@pytest.mark.parametrize("text", [alias_bomb(40), flow_nesting(600)], ids=["bomb", "deep"])
def test_reload_of_a_hostile_config_keeps_the_daemon(tmp_path, cache_dir, classifier,
                                                     photo_video, start_service, text):
    path = tmp_path / "c.yaml"
    write_config(path, base_config(cache_dir, camera={"loop": True, "device": str(photo_video)},
                                   output={"every_frame": True}, model={"top_k": 3}))
    daemon = start_service("--config", str(path))
    daemon.wait_for(lambda e: e["event"] == "prediction")
    path.write_text(text)
    daemon.reload()
    failed = daemon.wait_for(lambda e: e["event"] == "reload")
    assert failed["level"] == "error" and str(path) in failed["message"]
    assert "keeping the running configuration" in failed["message"]
    daemon.drain()
    daemon.wait_for(lambda e: e["event"] == "prediction" and len(e["classes"]) == 3)
    assert daemon.running
    daemon.stop()
    assert daemon.finish() == 0
