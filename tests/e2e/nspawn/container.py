"""Boot systemd 252 in systemd-nspawn over a read-only, non-recursive bind of a root directory.

This machine's root by default; `make e2e-arm` boots its arm64 userland the same way.

The host does not run systemd, so the only real systemd we can test against is one booted in a
container. A careless boot lets systemd-tmpfiles clean the host's /tmp, so every guard lives here:
this module refuses to run outside a private mount namespace, binds / without its submounts and
read-only, has nspawn put a tmpfs overlay over all of it (--volatile=overlay) with private /tmp
and /var/tmp, and checks canary files on the host before and after.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}


class ContainerError(RuntimeError):
    """The container could not be booted, driven or shut down as expected."""


def _mountinfo() -> list[list[str]]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return [line.split() for line in f]


def ensure_private_mount_namespace() -> None:
    """Refuse to go on unless every mount we make stays invisible to the host."""
    if os.geteuid() != 0:
        raise ContainerError("must run as root (mount, systemd-nspawn, nsenter)")
    if os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{os.getppid()}/ns/mnt"):
        raise ContainerError(
            "not in a private mount namespace: run under `unshare --mount --propagation private`"
        )
    shared = [
        fields[4]
        for fields in _mountinfo()
        if any(f.startswith("shared:") for f in fields[6 : fields.index("-")])
    ]
    if shared:
        raise ContainerError(f"mounts still propagate to the host: {shared[:3]}")


@dataclass
class Canaries:
    """Files on the host that a booted container must never touch."""

    paths: list[Path]
    token: str = field(default_factory=lambda: f"{os.getpid()}-{time.time_ns()}")

    def plant(self) -> None:
        for path in self.paths:
            path.write_text(self.token)

    def check(self) -> None:
        for path in self.paths:
            if not path.is_file() or path.read_text() != self.token:
                raise ContainerError(
                    f"canary {path} is gone or changed: the container touched the host"
                )

    def remove(self) -> None:
        for path in self.paths:
            path.unlink(missing_ok=True)


@dataclass
class Container:
    """A booted container, driven from outside with nsenter into its namespaces."""

    leader: int
    nspawn: subprocess.Popen[bytes]
    boot_log: Path
    env: dict[str, str] = field(default_factory=lambda: dict(CONTAINER_ENV))

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container, as root, with a clean environment."""
        cmd = ["nsenter", "-t", str(self.leader), "-a", "env", "-i"]
        cmd += [f"{k}={v}" for k, v in self.env.items()]
        proc = subprocess.run(
            [*cmd, *args], check=False, input=input, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise ContainerError(
                f"`{' '.join(args)}` exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def out(self, *args: str, timeout: float = 120) -> str:
        """Stdout of a command that must succeed."""
        return self.run(*args, timeout=timeout).stdout

    def write(self, path: str, text: str) -> None:
        """Write a file inside the container (lands in its tmpfs overlay)."""
        self.run("sh", "-c", 'cat > "$1"', "sh", path, input=text)

    def boot_log_tail(self) -> str:
        return _tail(self.boot_log)

    def print_failure(self, unit: str) -> None:
        """What a failed step leaves to read: the unit's journal and the boot log's tail."""
        print(self.run("journalctl", "--no-pager", "-u", unit, "-n", "150", check=False).stdout)
        print(f"--- container boot log (tail) ---\n{self.boot_log_tail()}")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def _terminate_with_parent() -> None:
    """If this driver dies without cleaning up, nspawn gets SIGTERM and powers the container off."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _container_init(nspawn_pid: int) -> int | None:
    """The descendant of nspawn that is PID 1 in its own PID namespace."""
    todo = _children(nspawn_pid)
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspid = next(
            (line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), []
        )
        if len(nspid) > 1 and nspid[-1] == "1":
            return pid
        todo += _children(pid)
    return None


def _stop(nspawn: subprocess.Popen[bytes], leader: int | None, timeout: float) -> None:
    """Power the container off and wait for nspawn; signal only the nspawn we started."""
    if nspawn.poll() is None and leader is not None:
        subprocess.run(
            ["nsenter", "-t", str(leader), "-a", "systemctl", "--no-block", "poweroff"],
            check=False,
            capture_output=True,
            timeout=30,
        )
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None and nspawn.poll() is None:
            nspawn.send_signal(sig)
        try:
            nspawn.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue
    raise ContainerError(f"systemd-nspawn (pid {nspawn.pid}) did not exit")


@contextmanager
def booted(
    work: Path,
    name: str,
    binds_ro: Sequence[tuple[Path, str]] = (),
    overlays: Sequence[tuple[Path, Path, str]] = (),
    boot_timeout: float = 120,
    root: Path = Path("/"),
    env: Mapping[str, str] | None = None,
) -> Iterator[Container]:
    """Boot systemd in a container whose every write lands in memory; always shut it down.

    binds_ro: (host path, container path) pairs;
    overlays: (host lower dir, host upper dir, container path) triples;
    root: the directory whose read-only view the container boots (this machine's by default);
    env: extra variables for the container's PID 1 and for every command run inside.
    """
    env = dict(env or {})
    ensure_private_mount_namespace()
    # nspawn keeps host-side state under /run/systemd/nspawn; /run is a plain directory on
    # this machine's disk, so give it a tmpfs that vanishes with our mount namespace.
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "mode=0755", "pi-infer-nspawn-run", "/run"], check=True
    )
    rootbind = work / "rootbind"
    rootbind.mkdir(parents=True, exist_ok=True)
    if any(fields[4] == str(rootbind) for fields in _mountinfo()):
        raise ContainerError(f"{rootbind} is already a mount point")
    # Non-recursive: the host's /dev, /proc, /sys and any /tmp mount are not carried in.
    subprocess.run(["mount", "--bind", str(root), str(rootbind)], check=True)
    nspawn: subprocess.Popen[bytes] | None = None
    leader: int | None = None
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(rootbind)], check=True)
        nested = [f[4] for f in _mountinfo() if f[4].startswith(f"{rootbind}/")]
        if nested:
            raise ContainerError(f"unexpected mounts under {rootbind}: {nested}")
        cmd = [
            "systemd-nspawn", "-D", str(rootbind), "--volatile=overlay", "--boot",
            "--register=no", "--keep-unit", "--private-network", "--console=passive",
            "--tmpfs=/tmp", "--tmpfs=/var/tmp", f"--machine={name}",
        ]  # fmt: skip
        cmd += [f"--setenv={k}={v}" for k, v in env.items()]
        cmd += [f"--bind-ro={host}:{dest}" for host, dest in binds_ro]
        # nspawn creates only the last component of an overlay's mount point: give its parent
        # a tmpfs (nspawn mounts parents first).
        cmd += [f"--tmpfs={Path(dest).parent}" for _, _, dest in overlays]
        cmd += [f"--overlay={lower}:{upper}:{dest}" for lower, upper, dest in overlays]
        boot_log = work / "boot.log"
        with boot_log.open("wb") as log:
            nspawn = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_terminate_with_parent,
            )
        deadline = time.monotonic() + boot_timeout
        container = None
        while container is None:
            if nspawn.poll() is not None or time.monotonic() > deadline:
                raise ContainerError(f"container did not start:\n{_tail(boot_log)}")
            time.sleep(0.2)
            leader = _container_init(nspawn.pid)
            # Until nspawn's child has exec'd systemd, its namespaces are still being built.
            if leader is not None and _comm(leader) == "systemd":
                container = Container(leader, nspawn, boot_log, {**CONTAINER_ENV, **env})
        state = ""
        while state not in ("running", "degraded"):
            if time.monotonic() > deadline:
                raise ContainerError(f"boot ended in state {state!r}:\n{_tail(boot_log)}")
            # Fails until systemd's bus is up, then waits for the boot to finish.
            wait = str(max(1, int(deadline - time.monotonic())))
            state = container.run(
                "timeout", wait, "systemctl", "is-system-running", "--wait", check=False
            ).stdout.strip()
            time.sleep(0.2)
        yield container
    finally:
        if nspawn is not None:
            _stop(nspawn, leader, timeout=60)
        subprocess.run(["umount", str(rootbind)], check=True)
