"""A real etcd for the service tests, started once per session on free loopback ports."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from grserve.service.etcd_server import EtcdServer
from grserve.service.registry import Registry
from grserve.server.threads import cpu_slices, pin_to
from tests.server.conftest import free_port


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own for each test, so tests sharing the etcd do not see each other's instances."""
    return f"/grserve-test/{uuid.uuid4().hex}/"


@pytest.fixture
def registry(etcd: EtcdServer, prefix: str) -> Registry:
    return Registry(etcd.url, prefix=prefix)


def wait_for(condition: Callable[[], object], timeout: float, what: str = "the condition"):
    """`condition()`'s first truthy value, polled; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)
    return result


def start_instance(model_dir, etcd_url: str, *flags: str, port: int | None = None,
                   cpus: set[int] | None = None) -> tuple[subprocess.Popen, str]:
    """A real `grserve serve --register` process on loopback (2 s lease, heartbeats every 0.5 s), and its URL.
    `cpus` (one of `instance_cpus(n)`) pins it there with as many torch threads: instances started side by side
    get disjoint CPUs rather than each running a thread per core of the machine."""
    port = port or free_port()
    threads = ["--threads", str(len(cpus))] if cpus else []
    proc = subprocess.Popen([sys.executable, "-m", "grserve", "serve", "--model", str(model_dir), "--port", str(port),
                             "--register", etcd_url, "--lease-ttl-s", "2", "--heartbeat-s", "0.5", *threads, *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=pin_to(cpus) if cpus else None)
    return proc, f"http://127.0.0.1:{port}"


def instance_cpus(n: int) -> list[set[int]]:
    """CPUs for `n` instances on this machine: disjoint while there are enough (see cpu_slices)."""
    return cpu_slices(n)
