"""`inference.threads: auto`: the usable CPUs from the affinity mask and real cgroup files."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pidaemon import cpus
from pidaemon.cpus import Cpus, auto_threads, cgroup_quota, quota_v1, quota_v2, resolve_threads

from .conftest import base_config, write_config
from .inprocess import ready

V2_ONLY = "0::/system.slice/pi-infer.service\n"
HYBRID = ("12:cpu,cpuacct:/system.slice/pi-infer.service\n3:memory:/x\n"
          "0::/system.slice/pi-infer.service\n")


def write(root: Path, files: dict[str, str]) -> Path:
    """A cgroup file system as the kernel lays it out, with the given files."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_leaves_one_cpu_for_capture():
    assert [auto_threads(n) for n in (1, 2, 3, 4, 8)] == [1, 1, 2, 3, 7]


def test_quota_files():
    assert quota_v2("max 100000\n") is None
    assert quota_v2("150000 100000\n") == 1.5
    assert quota_v1("-1\n", "100000\n") is None
    assert quota_v1("200000\n", "100000\n") == 2.0
    assert cpus.cgroup_paths(HYBRID) == ("/system.slice/pi-infer.service",
                                    "/system.slice/pi-infer.service")
    assert cpus.cgroup_paths(V2_ONLY) == ("/system.slice/pi-infer.service", None)


def test_cgroup_v2_quota_of_the_unit_or_a_parent(tmp_path):
    """systemd's CPUQuota=150% writes `150000 100000` to the unit's cpu.max; a slice above it
    may cap it lower, and the smallest quota wins."""
    root = write(tmp_path, {"system.slice/pi-infer.service/cpu.max": "150000 100000\n",
                            "system.slice/cpu.max": "max 100000\n"})
    assert cgroup_quota(root, V2_ONLY) == 1.5
    write(root, {"system.slice/cpu.max": "50000 100000\n"})
    assert cgroup_quota(root, V2_ONLY) == 0.5
    # In a container the cgroup namespace makes the process's cgroup the root.
    container = write(tmp_path / "container", {"cpu.max": "200000 100000\n"})
    assert cgroup_quota(container, "0::/\n") == 2.0


def test_cgroup_v1_quota_as_fallback(tmp_path):
    root = write(tmp_path, {
        "cpu,cpuacct/system.slice/pi-infer.service/cpu.cfs_quota_us": "100000\n",
        "cpu,cpuacct/system.slice/pi-infer.service/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert cgroup_quota(root, HYBRID) == 1.0
    assert cgroup_quota(write(tmp_path / "none", {"cpu/cpu.cfs_quota_us": "-1\n",
                                                  "cpu/cpu.cfs_period_us": "100000\n"}),
                        "1:cpu:/\n0::/\n") is None


def test_quota_caps_the_affinity_mask():
    assert Cpus(4, None).usable == 4
    assert Cpus(4, 1.5).usable == 2  # 1.5 CPUs of time still runs on 2 at once
    assert Cpus(2, 8.0).usable == 2
    assert Cpus(4, 0.2).usable == 1
    assert resolve_threads("auto", Cpus(2, None)) == (1, "threads: auto → 1 of 2 CPUs")
    assert resolve_threads("auto", Cpus(8, 4.0)) == (
        3, "threads: auto → 3 of 4 CPUs (cgroup quota 4 CPUs)")
    assert resolve_threads(2, Cpus(8, None)) == (2, "threads: 2")


def on_one_cpu(work):
    """`work()` on a new thread whose affinity mask is one CPU (on Linux a mask is a thread's,
    inherited by the threads it starts, as taskset's is by a process); returns its result."""
    cpu = min(os.sched_getaffinity(0))
    result = []

    def narrowed() -> None:
        os.sched_setaffinity(0, {cpu})
        result.append(work())

    thread = threading.Thread(target=narrowed)
    thread.start()
    thread.join(60)
    assert result, "the narrowed thread failed"
    return result[0]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux affinity")
def test_an_affinity_mask_of_one_cpu_is_one_usable_cpu():
    assert on_one_cpu(lambda: cpus.usable_cpus().affinity) == 1
    assert cpus.usable_cpus().affinity == len(os.sched_getaffinity(0))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux affinity")
def test_daemon_logs_what_auto_chose(tmp_path, cache_dir, classifier, photo_video,
                                     start_service):
    config = base_config(cache_dir)
    config["inference"]["threads"] = "auto"
    path = write_config(tmp_path / "c.yaml", config)
    daemon = on_one_cpu(lambda: start_service("--config", str(path), "--source",
                                              str(photo_video)))
    starting = daemon.wait_for(lambda e: e["message"].startswith("starting"))
    assert "threads: auto → 1 of 1 CPU, source" in starting["message"], starting
    daemon.wait_for(ready)
    daemon.stop()
    assert daemon.finish() == 0
