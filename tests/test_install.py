"""`make install-files` puts the unit and config where systemd looks, and never overwrites a
config the user has edited."""

import shutil
import subprocess

import pytest

from .conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(REPO), *args], capture_output=True,
                          text=True, timeout=60)


def test_install_files_into_destdir(tmp_path):
    result = make("install-files", f"DESTDIR={tmp_path}")
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "etc/systemd/system/pi-infer.service"
    config = tmp_path / "etc/pi-infer.yaml"
    assert unit.read_text() == (REPO / "systemd/pi-infer.service").read_text()
    assert config.read_text() == (REPO / "etc/pi-infer.yaml").read_text()
    assert "ExecStart=/opt/pi-infer/venv/bin/pi-infer run --config /etc/pi-infer.yaml" in (
        unit.read_text())


def test_install_keeps_an_edited_config(tmp_path):
    config = tmp_path / "etc/pi-infer.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("camera: {device: /dev/video2}\n")
    result = make("install-files", f"DESTDIR={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert config.read_text() == "camera: {device: /dev/video2}\n"
    assert "keeping existing" in result.stdout
