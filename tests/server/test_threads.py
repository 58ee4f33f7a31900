"""Usable CPUs from hand-written cgroup files (v2 cpu.max, v1 cfs quota/period) and an affinity set, and
cpu_slices' disjointness."""
from __future__ import annotations

import os

import pytest

from grserve.server.threads import cgroup_cpu_limit, cpu_slices, pin_to, usable_cpus


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def v2(tmp_path, cpu_max: str | None, path: str = "/") -> tuple:
    proc = write(tmp_path / "proc-cgroup", f"0::{path}\n")
    if cpu_max is not None:
        write(tmp_path / "cg" / path.strip("/") / "cpu.max", cpu_max + "\n")
    return tmp_path / "cg", proc


def v1(tmp_path, quota: int, period: int = 100000, controllers: str = "cpu,cpuacct") -> tuple:
    proc = write(tmp_path / "proc-cgroup", f"4:memory:/x\n3:{controllers}:/\n0::/\n")
    write(tmp_path / "cg" / controllers / "cpu.cfs_quota_us", f"{quota}\n")
    write(tmp_path / "cg" / controllers / "cpu.cfs_period_us", f"{period}\n")
    return tmp_path / "cg", proc


@pytest.mark.parametrize("cpu_max, cpus", [("200000 100000", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5),
                                           ("max 100000", None)])
def test_cgroup_v2_cpu_max(tmp_path, cpu_max, cpus):
    root, proc = v2(tmp_path, cpu_max)
    assert cgroup_cpu_limit(root, proc) == cpus


def test_cgroup_v2_nested_takes_the_tightest_ancestor(tmp_path):
    root, proc = v2(tmp_path, "max 100000", "/kubepods/pod1/ctr")
    write(root / "kubepods" / "pod1" / "cpu.max", "300000 100000\n")
    write(root / "kubepods" / "cpu.max", "800000 100000\n")
    assert cgroup_cpu_limit(root, proc) == 3.0


@pytest.mark.parametrize("quota, period, cpus", [(400000, 100000, 4.0), (-1, 100000, None), (25000, 50000, 0.5)])
def test_cgroup_v1_cfs(tmp_path, quota, period, cpus):
    root, proc = v1(tmp_path, quota, period)
    assert cgroup_cpu_limit(root, proc) == cpus


def test_cgroup_v1_cpu_only_mount(tmp_path):
    root, proc = v1(tmp_path, 300000, controllers="cpu")
    assert cgroup_cpu_limit(root, proc) == 3.0


def test_no_cgroup_files_is_no_limit(tmp_path):
    assert cgroup_cpu_limit(tmp_path / "absent", tmp_path / "absent-proc") is None
    root, proc = v2(tmp_path, None)
    assert cgroup_cpu_limit(root, proc) is None


@pytest.mark.parametrize("cpu_max, affinity, expected", [
    ("max 100000", {0, 1, 2, 3}, 4),          # no quota: the affinity
    ("200000 100000", {0, 1, 2, 3, 4, 5}, 2),  # the quota caps the affinity
    ("800000 100000", {3, 5}, 2),              # the affinity caps the quota
    ("150000 100000", set(range(8)), 1),       # a fractional quota rounds down
    ("20000 100000", set(range(8)), 1),        # at least one
])
def test_usable_cpus(tmp_path, cpu_max, affinity, expected):
    root, proc = v2(tmp_path, cpu_max)
    assert usable_cpus(root, proc, affinity=affinity) == expected


def test_usable_cpus_of_this_process_within_its_affinity():
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("n, cpus", [(1, 8), (2, 8), (3, 8), (3, 7), (4, 4), (5, 16)])
def test_cpu_slices_disjoint_and_cover(n, cpus):
    available = set(range(10, 10 + cpus))
    slices = cpu_slices(n, available, usable=cpus)
    assert len(slices) == n and all(slices)
    assert set().union(*slices) == available
    assert sum(len(s) for s in slices) == cpus  # disjoint: no CPU counted twice
    assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_cpu_slices_use_only_the_usable_cpus():
    slices = cpu_slices(2, set(range(8)), usable=4)
    assert slices == [{0, 1}, {2, 3}]


def test_cpu_slices_wrap_when_instances_outnumber_cpus():
    slices = cpu_slices(5, {0, 1}, usable=2)
    assert slices == [{0}, {1}, {0}, {1}, {0}]
    with pytest.raises(ValueError):
        cpu_slices(0, {0})


def test_pin_to_sets_the_affinity_of_the_process_that_runs_it():
    import subprocess
    import sys
    cpu = min(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                         preexec_fn=pin_to({cpu}), capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"[{cpu}]"
