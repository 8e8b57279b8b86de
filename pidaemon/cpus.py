"""The CPUs this process may use, and the thread count `inference.threads: auto` stands for.

os.cpu_count() counts the machine's CPUs; what the daemon may really use is fewer when its
affinity mask is narrowed (taskset, systemd CPUAffinity=) or a cgroup CPU quota caps it
(systemd CPUQuota=, docker --cpus). OpenMP threads that outnumber the CPUs wait for each other
at every operator, so `auto` counts the usable CPUs and leaves one for the capture thread.

The parsing functions take the files' text, or a directory laid out like /sys/fs/cgroup, so
they can be tested on real files; `usable_cpus()` reads this process's own.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

AUTO = "auto"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class Cpus:
    """How many CPUs the process may use and what limits it."""

    affinity: int  # CPUs in the affinity mask
    quota: float | None  # the cgroup CPU quota in CPUs; None when there is none

    @property
    def usable(self) -> int:
        """The affinity mask, capped by the quota rounded up (a 0.5 CPU quota still runs 1)."""
        if self.quota is None:
            return self.affinity
        return max(1, min(self.affinity, math.ceil(self.quota)))

    def describe(self) -> str:
        limit = f" (cgroup quota {self.quota:g} CPUs)" if self.usable < self.affinity else ""
        return f"{self.usable} CPU{'s' if self.usable != 1 else ''}{limit}"


def auto_threads(usable: int) -> int:
    """One thread per usable CPU but one, which the capture thread keeps; at least 1."""
    return max(1, usable - 1)


def quota_v2(cpu_max: str) -> float | None:
    """cgroup v2 `cpu.max` ("max 100000" or "150000 100000") as CPUs; None when unlimited."""
    fields = cpu_max.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    quota, period = int(fields[0]), int(fields[1])
    return quota / period if quota > 0 and period > 0 else None


def quota_v1(cfs_quota_us: str, cfs_period_us: str) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` as CPUs; None when unlimited (-1)."""
    quota, period = int(cfs_quota_us), int(cfs_period_us)
    return quota / period if quota > 0 and period > 0 else None


def cgroup_paths(proc_self_cgroup: str) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and cgroup v1 `cpu` controller path, from /proc/self/cgroup.

    Lines are `ID:CONTROLLERS:PATH`; v2 has ID 0 and no controllers.
    """
    unified = v1_cpu = None
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        number, controllers, path = parts
        if number == "0" and controllers == "":
            unified = path
        elif "cpu" in controllers.split(","):
            v1_cpu = path
    return unified, v1_cpu


def _ancestors(path: str) -> list[str]:
    """`/a/b` -> [`/a/b`, `/a`, `/`]: every level up to the root, nearest first."""
    levels = [path]
    while path not in ("", "/"):
        path = path.rsplit("/", 1)[0] or "/"
        levels.append(path)
    return levels


def _smallest(quotas: list[float | None]) -> float | None:
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def cgroup_quota(root: Path, proc_self_cgroup: str) -> float | None:
    """The smallest CPU quota on this process's cgroup or its ancestors, in CPUs.

    `root` is where the cgroup file system is mounted (/sys/fs/cgroup). cgroup v2 first; v1's
    cpu controller (mounted at cpu or cpu,cpuacct) as the fallback.
    """
    unified, v1_cpu = cgroup_paths(proc_self_cgroup)
    if unified is not None:
        files = [root / level.lstrip("/") / "cpu.max" for level in _ancestors(unified)]
        quotas = [quota_v2(f.read_text()) for f in files if f.is_file()]
        if quotas:
            return _smallest(quotas)
    if v1_cpu is not None:
        for mount in (root / "cpu", root / "cpu,cpuacct"):
            levels = [mount / level.lstrip("/") for level in _ancestors(v1_cpu)]
            found = [d for d in levels if (d / "cpu.cfs_quota_us").is_file()]
            if found:
                return _smallest([quota_v1((d / "cpu.cfs_quota_us").read_text(),
                                           (d / "cpu.cfs_period_us").read_text())
                                  for d in found])
    return None


def usable_cpus() -> Cpus:
    """This process's affinity mask and cgroup quota."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 1
    try:
        quota = cgroup_quota(CGROUP_ROOT, PROC_CGROUP.read_text())
    except (OSError, ValueError):
        quota = None
    return Cpus(affinity, quota)


def resolve_threads(setting: int | str, cpus: Cpus | None = None) -> tuple[int, str]:
    """`inference.threads` as a number, with the line that says how it was chosen."""
    if setting != AUTO:
        return int(setting), f"threads: {setting}"
    cpus = cpus or usable_cpus()
    threads = auto_threads(cpus.usable)
    return threads, f"threads: auto → {threads} of {cpus.describe()}"
