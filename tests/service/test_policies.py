"""Routing policies on hand-built instance lists."""
from collections import defaultdict

from grserve.service.policies import CacheAware, LeastLoaded, RoundRobin, affinity
from grserve.service.registry import InstanceInfo


def inst(name, queue=0, rows=0, hashes=()):
    return InstanceInfo(instance_id=name, address=f"http://{name}", model="m", queue_depth=queue, running_rows=rows,
                        prefix_hashes=list(hashes))


def test_round_robin_cycles_in_a_stable_order():
    rr, pool = RoundRobin(), [inst("b"), inst("a"), inst("c")]
    assert [rr.choose(pool, defaultdict(int)).instance_id for _ in range(4)] == ["a", "b", "c", "a"]


def test_least_loaded_counts_reported_load_and_own_inflight():
    pool = [inst("a", queue=3), inst("b", queue=1, rows=256), inst("c", queue=2)]
    # loads: a 3, b 1 + 256/128 = 3, c 2
    assert LeastLoaded().choose(pool, defaultdict(int)).instance_id == "c"
    assert LeastLoaded().choose(pool, defaultdict(int, {"c": 2})).instance_id == "a"  # c: 4 with 2 in flight


def test_cache_aware_prefers_the_warm_prefix_unless_much_busier():
    prompt = [11, 22, 33, 44]  # chained block hashes of the prompt's prefix
    warm, cold = inst("warm", queue=1, hashes=[11, 22, 33]), inst("cold", queue=0)
    # warm: 3/4 matched - 1/2 = 0.25 ; cold: 0 - 0 = 0
    assert CacheAware().choose([warm, cold], defaultdict(int), prompt).instance_id == "warm"
    busy = inst("warm", queue=9, hashes=[11, 22, 33])
    # busy: 0.75 - 9/10 < 0
    assert CacheAware().choose([busy, cold], defaultdict(int), prompt).instance_id == "cold"
    # only the leading run counts: a hash held without its parents is no hit
    gap = inst("gap", hashes=[22, 33, 44])
    assert CacheAware().choose([gap, inst("other", hashes=[11])], defaultdict(int), prompt).instance_id == "other"


def test_affinity_is_stable_and_moves_only_the_dead_instances_keys():
    pool = [inst(n) for n in "abcd"]
    keys = [f"user-{i}" for i in range(200)]
    before = {k: affinity(pool, k).instance_id for k in keys}
    assert len(set(before.values())) == 4  # spread over every instance
    after = {k: affinity(pool[1:], k).instance_id for k in keys}  # "a" died
    assert all(after[k] == before[k] for k in keys if before[k] != "a")
