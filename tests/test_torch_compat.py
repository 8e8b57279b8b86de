"""ensure_torch_runs_here() against torch distributions really installed on a sys.path entry.

Each case runs in a fresh interpreter that sees only the standard library, pidaemon and a
throwaway site directory holding a torch dist-info (and torch/version.py, as a wheel installs it).
The one thing faked is the machine name, since these tests run on x86_64; the real aarch64 path
runs under an emulated Cortex-A72 in `make test-arm`. Every case is a fresh interpreter: the
module is marked system.
"""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.system

CHILD = """
import platform, sys
machine = sys.argv[1]
if machine != "native":
    platform.machine = lambda: machine
from pidaemon.errors import UnsupportedTorchError
from pidaemon.model.torch_compat import ensure_torch_runs_here
try:
    ensure_torch_runs_here()
except UnsupportedTorchError as err:
    print(err)
    sys.exit(err.exit_code)
finally:
    assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""


def install_torch(site: Path, version: str, cuda: str | None) -> None:
    """Lay out the files a torch wheel installs that the check reads: METADATA and version.py."""
    dist_info = site / f"torch-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    (site / "torch").mkdir()
    (site / "torch" / "version.py").write_text(
        "from typing import Optional\n\n"
        f"__version__ = {version!r}\ndebug = False\ncuda: Optional[str] = {cuda!r}\n"
    )


def check(site: Path, machine: str = "aarch64", **env: str) -> subprocess.CompletedProcess[str]:
    """Run the check in a child that sees no site-packages, only `site` and the repo."""
    child_env = {k: v for k, v in os.environ.items() if k != "PI_INFER_ALLOW_TORCH"}
    child_env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "-S", "-c", CHILD, machine],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=60,
        check=False,
    )


def assert_allowed(result: subprocess.CompletedProcess[str]) -> None:
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stdout + result.stderr


def assert_refused(result: subprocess.CompletedProcess[str], reason: str) -> None:
    """One line with the reason, what to install instead and how to override; exit 78."""
    assert result.returncode == 78, result.stdout + result.stderr
    assert reason in result.stdout
    assert "install torch==2.9.1 torchvision==0.24.1 instead" in result.stdout
    assert "set PI_INFER_ALLOW_TORCH=1" in result.stdout


@pytest.mark.parametrize("version", ["2.4.0", "2.6.0", "2.6.1", "2.10.0", "2.10.0+cpu"])
def test_versions_that_crash_a72_are_refused_with_the_fix(tmp_path: Path, version: str) -> None:
    install_torch(tmp_path, version, None)
    assert_refused(
        check(tmp_path),
        f"torch {version} is installed, and this torch crashes on Cortex-A72 (Raspberry Pi 4) "
        'with "Illegal instruction"',
    )


@pytest.mark.parametrize("version", ["2.1.0", "2.4.1", "2.9.1", "2.11.0+cpu", "2.15.0+cpu"])
def test_cpu_builds_not_known_to_crash_pass(tmp_path: Path, version: str) -> None:
    install_torch(tmp_path, version, None)
    result = check(tmp_path)
    assert_allowed(result)


@pytest.mark.parametrize(("version", "cuda"), [("2.11.0", "13.0"), ("2.9.1+cu128", "12.8")])
def test_cuda_builds_are_refused_on_aarch64(tmp_path: Path, version: str, cuda: str) -> None:
    install_torch(tmp_path, version, cuda)
    assert_refused(check(tmp_path), f"torch {version} is installed, and it is a CUDA {cuda} build")


def test_override_lets_a_known_bad_torch_through(tmp_path: Path) -> None:
    install_torch(tmp_path, "2.10.0", None)
    result = check(tmp_path, PI_INFER_ALLOW_TORCH="1")
    assert_allowed(result)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="checks the real x86_64 machine")
def test_x86_64_is_never_blocked(tmp_path: Path) -> None:
    install_torch(tmp_path, "2.11.0", "13.0")
    result = check(tmp_path, machine="native")
    assert_allowed(result)


def test_missing_torch_is_left_to_the_import(tmp_path: Path) -> None:
    result = check(tmp_path)
    assert_allowed(result)
