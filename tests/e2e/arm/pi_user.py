"""The Raspberry Pi user's path on an emulated Pi 4: `sudo make install`, systemctl, journalctl.

Run by run.sh (`make e2e-arm`) inside `unshare --mount --propagation private`. It boots the arm64
Debian userland of `make test-arm` with systemd as PID 1 in systemd-nspawn, every arm64 process
under qemu-user with QEMU_CPU=cortex-a72 (the Pi 4's core), over a tmpfs overlay with the same
guards as `make e2e` (../nspawn/container.py). Then, as a Pi user would:
0. the CPU model reaches PID 1, services and sudo: one LSE atomic dies with SIGILL in each;
1. the user pi clones the project; `sudo make install SANITY_IMAGE=<coffee photo>` builds the
   venv with pip resolving the pinned aarch64 wheels (the files PyPI serves, from a local copy:
   the container has no network), prepares the model as the service's user, prints the photo's
   label, enables and starts the unit (camera.device is a video of the shared photos);
2. `systemctl is-active` says active after READY; the journal shows stats, the photos' labels and
   the qnnpack engine;
3. `systemctl reload` applies a new top_k live, and a broken config is logged and the old one kept;
4. `sudo make install` again is a no-op upgrade: same venv, nothing new but pi-infer, config kept;
5. `systemctl stop` ends with status 0;
6. `sudo make uninstall` removes everything but the config.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "nspawn"))
from container import Canaries, Container, ContainerError, booted  # noqa: E402
from proof import SRV, UNIT, Proof, ProofFailed, Timings, edited_config, write_video  # noqa: E402

CPU = "cortex-a72"
CONFIG = "/etc/pi-infer.yaml"
PREFIX = "/opt/pi-infer"
CLONE = "/home/pi/pi-infer"
SANITY = ("coffee.png", "espresso")  # a photo whose top-1 wins clearly on any CPU
INSTALL_TIMEOUT = 3600  # the first install unpacks torch and compiles the model, all emulated


def stage(repo: Path, shared: Path, run: Path) -> Path:
    """The files bound at SRV: a git repository of the project, the camera video, the probe."""
    share = run / "share"
    for mount_point in ("models", "images", "wheels"):
        (share / mount_point).mkdir(parents=True)
    files = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    origin = share / "pi-infer"
    for rel in filter(None, files):
        if (repo / rel).is_file():
            (origin / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / rel, origin / rel)
    git = ["git", "-C", str(origin), "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the project as tested"]):
        subprocess.run([*git, *args], check=True)
    # Owned by the guest's pi (uid 1000), as a clone source on the network would not matter.
    subprocess.run(["chown", "-R", "1000:1000", str(origin)], check=True)
    write_video(share / "camera.avi", shared / "images")
    shutil.copy(repo / "tests" / "arm" / "lse_probe.py", share)
    return share


def machine_files(run: Path, wheels: str) -> list[tuple[Path, str]]:
    """What makes the userland an emulated Pi 4 with a local PyPI: (host file, guest path)."""
    etc = run / "etc"
    (etc / "system.conf.d").mkdir(parents=True)
    # systemd starts services with a clean environment: the CPU model must reach them too...
    (etc / "system.conf.d" / "qemu-cpu.conf").write_text(
        f"[Manager]\nDefaultEnvironment=QEMU_CPU={CPU}\n"
    )
    # ...and commands run with sudo (its env_reset drops it).
    (etc / "sudoers.d").mkdir(mode=0o755)
    keep = etc / "sudoers.d" / "qemu-cpu"
    keep.write_text('Defaults env_keep += "QEMU_CPU"\n')
    keep.chmod(0o440)
    (etc / "pip.conf").write_text(f"[global]\nno-index = true\nfind-links = {wheels}\n")
    # qemu-user cannot emulate how systemd 252 hands a unit its own IPC namespace: any unit with
    # PrivateIPC=yes fails with "Failed to set up IPC namespacing: Input/output error" (226/
    # NAMESPACE), PrivateNetwork=yes likewise; the other sandboxing options of the unit work.
    (etc / "qemu-user.conf").write_text("[Service]\nPrivateIPC=no\n")
    return [
        (etc / "qemu-user.conf", f"/etc/systemd/system/{UNIT}.service.d/qemu-user.conf"),
        (etc / "system.conf.d", "/etc/systemd/system.conf.d"),
        (keep, "/etc/sudoers.d/qemu-cpu"),
        (etc / "pip.conf", "/etc/pip.conf"),
    ]


def expect_sigill(what: str, result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode not in (-signal.SIGILL, 128 + signal.SIGILL) and (
        "status=ILL" not in result.stderr
    ):
        raise ProofFailed(
            f"an LSE atomic {what} exited {result.returncode}, not SIGILL: QEMU_CPU={CPU} did "
            f"not reach it\n{result.stdout}{result.stderr}"
        )


class PiUser:
    """The user pi's commands, and what they must leave behind."""

    def __init__(self, box: Container) -> None:
        self.box = box
        self.proof = Proof(box, "")

    def cpu(self) -> None:
        """Step 0: PID 1, a service and sudo run on a Cortex-A72 without LSE; `max` has LSE."""
        environ = Path(f"/proc/{self.box.leader}/environ").read_bytes().split(b"\0")
        if f"QEMU_CPU={CPU}".encode() not in environ:
            raise ProofFailed(f"PID 1 of the container runs without QEMU_CPU={CPU}")
        probe = ["python3", f"{SRV}/lse_probe.py"]
        service = self.box.run("systemd-run", "--wait", "--pipe", "--collect", *probe,
                               check=False, timeout=300)  # fmt: skip
        expect_sigill("in a service", service)
        expect_sigill("under sudo", self.box.run("sudo", *probe, check=False, timeout=300))
        loose = self.box.run("env", "QEMU_CPU=max", *probe, check=False, timeout=300)
        if loose.returncode != 0 or "37 + 5 -> 42" not in loose.stdout:
            raise ProofFailed(f"the LSE probe fails under QEMU_CPU=max too, so its SIGILL proves "
                              f"nothing\n{loose.stdout}{loose.stderr}")  # fmt: skip
        print(f"  PID 1, a service and sudo: SIGILL under {CPU}; {loose.stdout.strip()} under max")

    def as_pi(self, *argv: str, timeout: float = 300) -> str:
        return self.box.out("setpriv", "--reuid=pi", "--regid=pi", "--init-groups",
                            "env", "HOME=/home/pi", "USER=pi", *argv, timeout=timeout)  # fmt: skip

    def clone(self) -> None:
        """Step 1a: the user pi (Raspberry Pi OS's first user) clones the project."""
        self.box.run("useradd", "--create-home", "--uid", "1000", "--groups", "sudo",
                     "--shell", "/bin/bash", "pi")  # fmt: skip
        self.as_pi("git", "clone", "--quiet", f"{SRV}/pi-infer", CLONE)
        # Under qemu-user a setuid binary does not run as its owner (binfmt_misc without the C
        # flag takes the credentials from the emulator), so pi cannot become root: his `sudo`
        # commands run as root, with the same sudo, PAM session and environment reset.
        denied = self.box.run("setpriv", "--reuid=pi", "--regid=pi", "--init-groups",
                              "sudo", "-n", "true", check=False)  # fmt: skip
        print(
            f"  pi's own sudo under qemu-user: exit {denied.returncode}, "
            f"{denied.stderr.strip().splitlines()[-1:]}"
        )
        # The config as the user keeps it (make install never overwrites it): camera and weights
        # are local, for the container has no camera and no network.
        installed = (Path(__file__).resolve().parents[3] / "etc" / "pi-infer.yaml").read_text()
        self.box.write(CONFIG, edited_config(installed, top_k=5))
        self.proof.installed_config = installed

    def sudo_make(self, *args: str) -> str:
        result = self.box.run("env", "-C", CLONE, "sudo", "make", *args, check=False,
                              timeout=INSTALL_TIMEOUT)  # fmt: skip
        if result.returncode != 0:
            raise ProofFailed(f"`sudo make {' '.join(args)}` exited {result.returncode}\n"
                              f"{result.stdout[-6000:]}\n{result.stderr[-4000:]}")  # fmt: skip
        return result.stdout + result.stderr

    def install(self) -> None:
        """Step 1b: `sudo make install` prepares, prints the photo's label, enables, starts."""
        out = self.sudo_make("install", f"SANITY_IMAGE={SRV}/images/{SANITY[0]}")
        ready = re.search(r"^model ready: .*$", out, re.MULTILINE)
        sanity = re.search(rf"^{re.escape(SRV)}/images/{SANITY[0]}: (.*)$", out, re.MULTILINE)
        print(f"  {ready and ready.group(0)}\n  sanity check: {sanity and sanity.group(0)}")
        if not ready or "engine qnnpack" not in ready.group(0):
            raise ProofFailed(f"prepare did not report the qnnpack engine:\n{out[-3000:]}")
        if not sanity or not sanity.group(1).startswith(f"{SANITY[1]} ("):
            raise ProofFailed(f"the sanity check did not label {SANITY[0]} {SANITY[1]}:\n{out}")
        enabled = self.box.run("systemctl", "is-enabled", UNIT, check=False).stdout.strip()
        if enabled != "enabled" or self.proof.is_active() != "active":
            raise ProofFailed(f"after make install: {enabled}, {self.proof.is_active()}")

    def running(self) -> None:
        """Step 2: active after READY; stats, labels and the engine in the journal."""
        props = self.proof.show("Type", "ActiveState", "SubState", "MainPID")
        if props != {**props, "Type": "notify", "ActiveState": "active", "SubState": "running"}:
            raise ProofFailed(f"systemctl show {UNIT}: {props}")
        environ = self.box.out("cat", f"/proc/{props['MainPID']}/environ").split("\0")
        if f"QEMU_CPU={CPU}" not in environ:
            raise ProofFailed(f"the service's main process runs without QEMU_CPU={CPU}")
        engine = re.search(r"^model: .*engine (\w+).*$", self.proof.journal("-o", "cat"), re.M)
        print(f"  {engine and engine.group(0)}")
        if not engine or engine.group(1) != "qnnpack":
            raise ProofFailed(f"journalctl -u {UNIT} does not show the qnnpack engine")
        self.proof.journal_shows_results()

    def reinstall(self) -> None:
        """Step 4: installing again changes nothing but pi-infer itself and restarts the unit."""
        venv = f"{PREFIX}/venv/pyvenv.cfg"
        before = self.box.out("stat", "-c", "%i %Y", venv)
        out = self.sudo_make("install")
        installed = re.findall(r"^Successfully installed (.*)$", out, re.MULTILINE)
        others = [p for line in installed for p in line.split() if not p.startswith("pi-infer-")]
        if self.box.out("stat", "-c", "%i %Y", venv) != before or others:
            raise ProofFailed(f"a second make install rebuilt the venv or installed {others}")
        if f"keeping existing {CONFIG}" not in out or self.proof.is_active() != "active":
            raise ProofFailed(f"after a second make install: {self.proof.is_active()}\n{out}")
        print(f"  same venv; pip installed only {installed or 'nothing'}; config kept; active")

    def stop(self) -> None:
        """Step 5: a clean stop, exit status 0."""
        self.proof.stop()
        props = self.proof.show("Result", "ExecMainCode", "ExecMainStatus")
        if props != {"Result": "success", "ExecMainCode": "1", "ExecMainStatus": "0"}:
            raise ProofFailed(f"after systemctl stop: {props}")
        print(f"  {props}")

    def uninstall(self) -> None:
        """Step 6: the venv, the unit and its enablement are gone; the config stays as it was."""
        config = self.box.out("cat", CONFIG)
        out = self.sudo_make("uninstall")
        left = self.box.run("ls", "-d", PREFIX, f"/etc/systemd/system/{UNIT}.service",
                            f"/etc/systemd/system/multi-user.target.wants/{UNIT}.service",
                            check=False).stdout.split()  # fmt: skip
        # Exit status 1 and no lines: no such unit file any more.
        files = self.box.run("systemctl", "list-unit-files", "--no-legend", f"{UNIT}.service",
                             check=False).stdout  # fmt: skip
        if left or files.strip() or self.box.out("cat", CONFIG) != config:
            raise ProofFailed(
                f"after make uninstall: left {left}, unit files {files!r}, "
                f"config changed: {self.box.out('cat', CONFIG) != config}\n{out}"
            )
        kept = [line for line in out.splitlines() if line.startswith("kept ")]
        print(f"  removed {PREFIX} and the unit; {kept}")


def run_proof(args: argparse.Namespace, timings: Timings, passed: list[str]) -> None:
    run = args.work / "run"
    shutil.rmtree(run, ignore_errors=True)
    with timings.phase("stage"):
        share = stage(args.repo, args.shared, run)
        binds = [(share, SRV), (args.shared / "models", f"{SRV}/models"),
                 (args.shared / "images", f"{SRV}/images"), (args.wheels, f"{SRV}/wheels"),
                 *machine_files(run, f"{SRV}/wheels")]  # fmt: skip
    since = time.monotonic()
    with booted(args.work, "pi-infer-e2e-arm", binds, boot_timeout=600, root=args.rootfs,
                env={"QEMU_CPU": CPU}) as box:  # fmt: skip
        timings.record("boot", since)
        user = PiUser(box)
        steps = [("cpu", user.cpu), ("clone", user.clone), ("install", user.install),
                 ("running", user.running), ("reload", user.proof.reload),
                 ("reinstall", user.reinstall), ("stop", user.stop),
                 ("uninstall", user.uninstall)]  # fmt: skip
        try:
            for name, step in steps:
                with timings.phase(name):
                    step()
                passed.append(name)
        except (ProofFailed, ContainerError, subprocess.TimeoutExpired):
            box.print_failure(UNIT)
            raise
        since = time.monotonic()
    timings.record("poweroff", since)
    shutil.rmtree(run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--shared", type=Path, required=True)
    parser.add_argument("--rootfs", type=Path, required=True, help="the arm64 userland")
    parser.add_argument("--wheels", type=Path, required=True, help="the aarch64 wheels")
    parser.add_argument("--work", type=Path, required=True, help="this harness's scratch dir")
    args = parser.parse_args()
    # A SIGILL must not leave qemu core files behind; nsenter's arm64 `env` runs as a Pi 4 too.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.environ["QEMU_CPU"] = CPU
    args.work.mkdir(parents=True, exist_ok=True)
    canaries = Canaries([args.work / "canary", Path("/tmp/pi-infer-e2e-arm-canary")])
    canaries.plant()
    timings = Timings()
    passed: list[str] = []
    failed = 0
    try:
        run_proof(args, timings, passed)
    except (ProofFailed, ContainerError, subprocess.CalledProcessError,
            subprocess.TimeoutExpired) as exc:  # fmt: skip
        print(f"FAILED: {exc}", file=sys.stderr)
        failed = 1
    finally:
        canaries.check()  # raises past everything: the host was touched
        canaries.remove()
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(f"e2e-arm: {len(passed)} passed, {failed} failed", flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())
