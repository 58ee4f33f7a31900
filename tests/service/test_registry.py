"""The etcd registry against a real etcd: leases, heartbeats, expiry, and what routers see."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from grserve.service.etcd_server import EtcdServer, _free_port, find_etcd_binary
from grserve.service.registry import InstanceCache, InstanceInfo, Registry, RegistryError
from tests.service.conftest import wait_for


def info(n: int = 0) -> InstanceInfo:
    return InstanceInfo(instance_id=f"10.0.0.{n}:8000", address=f"http://10.0.0.{n}:8000", model="tiny-gr",
                        kinds=["gr", "llm"], role="decode")


def test_register_and_list_round_trip(registry: Registry) -> None:
    mine = info()
    reg = registry.register(mine, ttl=30)
    [seen] = registry.instances()
    assert seen == reg.info and seen.incarnation == mine.incarnation
    assert len(seen.incarnation) == 32 and seen.kinds == ["gr", "llm"] and seen.role == "decode"
    assert InstanceInfo.from_json(seen.to_json()) == seen
    reg.stop()


def test_heartbeats_update_load_and_outlive_the_ttl(registry: Registry) -> None:
    beats = iter(range(1, 1000))
    reg = registry.register(info(), ttl=2)
    reg.start_heartbeats(lambda: {"queue_depth": next(beats), "kv_usage": 0.25, "prefix_hashes": [7, 9]},
                         interval=0.5)
    time.sleep(3.0)  # past the 2 s TTL: only the heartbeats' refreshes keep the key
    [seen] = registry.instances()
    assert seen.queue_depth >= 4 and seen.kv_usage == 0.25 and seen.prefix_hashes == [7, 9]
    assert seen.heartbeat_interval == 0.5 and seen.state() == "alive"
    reg.stop()


def test_silent_instance_turns_suspect_then_expires(registry: Registry) -> None:
    reg = registry.register(info(), ttl=2)
    reg.start_heartbeats(lambda: {}, interval=0.5)
    with InstanceCache(registry, interval=0.1) as cache:
        time.sleep(0.6)
        reg.stop(deregister=False)  # as if the process hung: no more heartbeats, the lease left to run out
        wait_for(lambda: not cache.alive(), timeout=2.0)
        assert list(cache.instances()) == [reg.info.instance_id]  # suspect: the key is still there
        assert cache.is_suspect(reg.info.instance_id)
        gone = wait_for(lambda: not cache.instances(), timeout=3.0)
    assert gone > 0.3  # removed by the lease's expiry, well after suspicion began
    assert registry.instances() == []


def test_deregister_removes_at_once(registry: Registry) -> None:
    reg = registry.register(info(), ttl=30)
    reg.stop()
    assert registry.instances() == []


def test_restart_gets_a_new_incarnation_that_outlives_the_old_lease(etcd: EtcdServer, prefix: str) -> None:
    old = Registry(etcd.url, prefix).register(info(), ttl=30)
    new = Registry(etcd.url, prefix).register(info(), ttl=30)
    assert new.info.incarnation != old.info.incarnation
    registry = Registry(etcd.url, prefix)
    assert [i.incarnation for i in registry.instances()] == [new.info.incarnation]
    old.stop()  # the old incarnation's lease ending must not take the key the new one wrote
    assert [i.incarnation for i in registry.instances()] == [new.info.incarnation]
    new.stop()


def test_heartbeat_after_a_lost_lease_registers_again(registry: Registry) -> None:
    reg = registry.register(info(), ttl=30)
    incarnation = reg.info.incarnation
    assert reg._lease is not None
    reg._lease.revoke()  # what a stall longer than the TTL does
    assert registry.instances() == []
    reg.heartbeat({"running_rows": 3})
    [seen] = registry.instances()
    assert seen.running_rows == 3 and seen.incarnation == incarnation
    reg.stop()


def test_two_routers_see_the_same_set(etcd: EtcdServer, prefix: str) -> None:
    caches = [InstanceCache(Registry(etcd.url, prefix), interval=0.2).start() for _ in range(2)]
    engines = Registry(etcd.url, prefix)
    a, b = engines.register(info(1), ttl=30), engines.register(info(2), ttl=30)
    ids = {a.info.instance_id, b.info.instance_id}
    wait_for(lambda: all(set(c.instances()) == ids for c in caches), timeout=1.0)
    a.stop()
    wait_for(lambda: all(set(c.instances()) == {b.info.instance_id} for c in caches), timeout=1.0)
    b.stop()
    for cache in caches:
        cache.stop()


def test_mark_suspect_lasts_until_the_next_heartbeat(registry: Registry) -> None:
    reg = registry.register(info(), ttl=30)
    with InstanceCache(registry, interval=0.1) as cache:
        cache.mark_suspect(reg.info.instance_id)
        assert cache.alive() == []
        reg.heartbeat()
        wait_for(lambda: len(cache.alive()) == 1, timeout=1.0)
    reg.stop()


def test_unknown_load_field_is_refused(registry: Registry) -> None:
    reg = registry.register(info(), ttl=30)
    with pytest.raises(ValueError, match="model"):
        reg.heartbeat({"model": "other"})
    reg.stop()


def test_unreachable_etcd_raises_registry_error_naming_it() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(RegistryError, match=url):
        Registry(url).instances()


def test_etcd_server_stop_removes_its_data() -> None:
    with EtcdServer() as server:
        Registry(server.url).instances()
        data = server._dir
        assert data is not None and data.is_dir()
    assert not data.exists()
    with pytest.raises(RegistryError):
        Registry(server.url).instances()


def test_etcd_server_reports_a_failed_start() -> None:
    assert Path(find_etcd_binary()).exists()
    with pytest.raises(RuntimeError, match="/bin/false"):
        EtcdServer(binary="/bin/false").start()
