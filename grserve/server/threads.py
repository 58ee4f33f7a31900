"""How many CPUs this process may use, and sizing torch's threads to them.

Usable CPUs are the CPUs of the process's affinity mask (`taskset`, `docker --cpuset-cpus`), capped by its
cgroup's CPU quota (`docker --cpus`, a Kubernetes CPU limit), at least 1. `os.cpu_count()` is neither: it
counts the host's CPUs, so a container limited to 2 CPUs on a 64-core host would run 64 torch threads that
the quota throttles. `cpu_slices` splits the usable CPUs between several instances on one host."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")

log = logging.getLogger(__name__)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_quota(directory: Path) -> float | None:
    """CPUs allowed by cgroup v2's `cpu.max` ("QUOTA PERIOD" or "max PERIOD") in `directory`; None: no limit."""
    text = _read(directory / "cpu.max")
    if not text:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max":
        return None
    try:
        return int(quota) / int(period or 100000)
    except (ValueError, ZeroDivisionError):
        return None


def _v1_quota(directory: Path) -> float | None:
    """CPUs allowed by cgroup v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us` in `directory` (quota -1: none)."""
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        quota_us, period_us = int(quota or "-1"), int(period or "100000")
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _ancestors(base: Path, cgroup_path: str) -> list[Path]:
    """`base/cgroup_path` and every directory above it up to `base`: a parent's limit binds its children too.
    Inside a container the path is often "/" (a cgroup namespace), or names a host path not mounted there;
    directories that do not exist are skipped by the readers."""
    parts = [p for p in cgroup_path.strip("/").split("/") if p and p != ".."]
    return [base.joinpath(*parts[:k]) for k in range(len(parts), -1, -1)]


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota (in CPUs, may be fractional) of this process's cgroup and its ancestors, the smallest
    one found; None when there is none. Reads cgroup v2 (`0::/path` in /proc/self/cgroup, `cpu.max`) and v1
    (the `cpu` controller's line, `cpu.cfs_quota_us` under `root/cpu` or `root/cpu,cpuacct`)."""
    limits: list[float] = []
    for line in (_read(proc_cgroup) or "0::/").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            dirs, reader = _ancestors(root, path), _v2_quota
        elif "cpu" in controllers.split(","):
            mounts = [root / name for name in (controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu")]
            dirs = [d for m in dict.fromkeys(mounts) for d in _ancestors(m, path)]
            reader = _v1_quota
        else:
            continue
        limits += [q for d in dirs if (q := reader(d)) is not None]
    return min(limits) if limits else None


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP,
                affinity: set[int] | None = None) -> int:
    """CPUs this process may use: its affinity, capped by the cgroup quota rounded down (a quota of 1.5 CPUs
    gives 1: a second busy thread would be throttled at every period's end, which costs latency), at least 1."""
    cpus = len(affinity if affinity is not None else os.sched_getaffinity(0))
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def cpu_slices(n: int, cpus: set[int] | None = None, usable: int | None = None) -> list[set[int]]:
    """`n` sets of CPUs for `n` instances on this host, disjoint and as even as can be (contiguous runs of
    `cpus`, default this process's affinity, of which the first `usable`, default `usable_cpus()`, are used).
    When `n` exceeds the CPUs they cannot be disjoint: instance i gets CPU i modulo their number, so the
    sets wrap around and some are shared."""
    if n < 1:
        raise ValueError(f"cpu_slices: n must be at least 1, got {n}")
    ordered = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    ordered = ordered[:max(1, usable if usable is not None else usable_cpus(affinity=set(ordered)))]
    if n >= len(ordered):
        return [{ordered[i % len(ordered)]} for i in range(n)]
    size, extra = divmod(len(ordered), n)
    slices, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        slices.append(set(ordered[start:end]))
        start = end
    return slices


def pin_to(cpus: set[int]):
    """A `preexec_fn` for subprocess.Popen that pins the child to `cpus` before it runs anything."""
    frozen = set(cpus)
    return lambda: os.sched_setaffinity(0, frozen)


def size_torch_threads(requested: int = 0) -> int:
    """Sets torch's intra-op (and, when still possible, inter-op) threads to `requested`, or to the usable
    CPUs when it is 0, and logs the choice; returns the count. Call before any torch work: the inter-op
    pool can be sized only before its first use."""
    import torch
    if requested < 0:
        raise ValueError(f"threads must be 0 (the usable CPUs) or more, got {requested}")
    usable = usable_cpus()
    threads = requested if requested > 0 else usable
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already started (torch work ran first): its size stays; intra-op is what matters
        pass
    quota = cgroup_cpu_limit()
    log.info("torch threads: %d (%s; usable CPUs %d: affinity %d, cgroup quota %s)", threads,
             "--threads" if requested > 0 else "sized to the usable CPUs", usable, len(os.sched_getaffinity(0)),
             "none" if quota is None else f"{quota:g}")
    return threads
