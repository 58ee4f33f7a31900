"""A real etcd for the service tests, started once per session on free loopback ports."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from grserve.service.etcd_server import EtcdServer
from grserve.service.registry import Registry


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
