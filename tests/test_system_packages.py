"""The system packages of every make target come from one list, checked before anything runs.

`packaging/ensure-system-packages` installs what is missing when run as root with apt-get;
the path a user without root takes is run here for real, as the `nobody` user.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .conftest import REPO

ENSURE = REPO / "packaging" / "ensure-system-packages"
LIST = REPO / "packaging" / "system-packages.txt"
TARGETS = ["run", "test", "bench", "e2e", "e2e-vm", "test-arm", "e2e-arm"]
SECTION = {"test-system": "test"}  # targets that need another target's packages
MISSING = "pi-infer-surely-missing-package"


def packages(*sections: str) -> list[str]:
    result = subprocess.run([str(ENSURE), "--print", *sections],
                            capture_output=True, text=True, check=True)
    return result.stdout.split()


def dry_run(target: str) -> list[str]:
    """The commands `make TARGET` would run, in order, with this interpreter's venv."""
    result = subprocess.run(["make", "-n", "--no-print-directory", target,
                             f"VENV={Path(sys.prefix)}"], cwd=REPO, capture_output=True,
                            text=True, check=True)
    return result.stdout.splitlines()


def test_each_target_has_its_packages_in_the_one_list():
    assert "mosquitto" in packages("test") and "chromium" in packages("test")
    assert "qemu-user-static" in packages("test-arm")
    for target in TARGETS:
        assert packages(target), f"[{target}] is empty or missing in {LIST}"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", [*TARGETS, *SECTION])
def test_make_checks_the_packages_before_anything_else(target):
    commands = dry_run(target)
    assert commands[0] == f"packaging/ensure-system-packages {SECTION.get(target, target)}", \
        commands


def test_no_second_copy_of_the_list():
    """CI asks the list for every target it makes; no script names packages to install."""
    ci = (REPO / ".ci" / "run").read_text()
    made = {SECTION.get(target, target) for target in
            re.findall(r"^(?:\w+=\S+ )*make ([\w-]+)", ci, re.MULTILINE) if target != "venv"}
    assert made and made <= set(TARGETS)
    asked = re.search(r"^packaging/ensure-system-packages (.+)$", ci, re.MULTILINE)
    assert asked and set(asked.group(1).split()) == made
    scripts = [REPO / "Makefile", *REPO.glob("mk/*.mk"), REPO / ".ci" / "run",
               *REPO.glob("tests/**/*.sh")]
    for script in scripts:
        text = script.read_text()
        assert not re.search(r"apt(-get)? install", text), f"{script} installs packages itself"
        for package in ("mosquitto", "chromium", "systemd-container", "binfmt-support",
                        "e2fsprogs", "python3.11-venv"):
            assert package not in text, f"{script} names {package}: use {LIST.name}"


def run_with_list(text: str, *sections: str,
                  as_nobody: bool = False) -> subprocess.CompletedProcess:
    """The script on a list of our own, in a directory any user can read."""
    with tempfile.TemporaryDirectory() as directory:
        listing = Path(directory) / "packages.txt"
        listing.write_text(text)
        listing.chmod(0o644)
        Path(directory).chmod(0o755)
        command = [str(ENSURE), "--list", str(listing), *sections]
        if as_nobody and os.geteuid() == 0:
            command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        return subprocess.run(command, capture_output=True, text=True)


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian system")


@needs_dpkg
def test_without_root_it_names_the_command_in_one_line():
    result = run_with_list(f"[test]\ncoreutils  # installed everywhere\n{MISSING}\n\n"
                           f"[other]\nmake\n", "test", as_nobody=True)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"missing system packages for test: sudo apt-get install {MISSING}\n"


@needs_dpkg
def test_nothing_missing_says_nothing():
    result = run_with_list("[a]\ncoreutils\n[b]\ncoreutils # twice\ndpkg\n", "a", "b")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_an_unknown_target_is_refused():
    result = subprocess.run([str(ENSURE), "no-such-target"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "has no section [no-such-target]" in result.stderr
