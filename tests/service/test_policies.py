"""Routing policies on hand-built instance lists; cache-aware over the hashes a real BlockManager registers."""
from collections import defaultdict

from grserve.service.policies import CacheAware, LeastLoaded, RoundRobin, affinity
from grserve.service.registry import InstanceInfo
from tests.service.fake_instance import reported_hashes


def inst(name, queue=0, rows=0, hashes=(), block_size=16):
    return InstanceInfo(instance_id=name, address=f"http://{name}", model="m", queue_depth=queue, running_rows=rows,
                        prefix_hashes=list(hashes), block_size=block_size)


def test_round_robin_cycles_in_a_stable_order():
    rr, pool = RoundRobin(), [inst("b"), inst("a"), inst("c")]
    assert [rr.choose(pool, defaultdict(int)).instance_id for _ in range(4)] == ["a", "b", "c", "a"]


def test_least_loaded_counts_reported_load_and_own_inflight():
    pool = [inst("a", queue=3), inst("b", queue=1, rows=256), inst("c", queue=2)]
    # loads: a 3, b 1 + 256/128 = 3, c 2
    assert LeastLoaded().choose(pool, defaultdict(int)).instance_id == "c"
    assert LeastLoaded().choose(pool, defaultdict(int, {"c": 2})).instance_id == "a"  # c: 4 with 2 in flight


def test_cache_aware_prefers_the_warm_prefix_unless_much_busier():
    prompt = list(range(100, 116))  # 4 blocks of 4
    warm, cold = inst("warm", queue=1, hashes=reported_hashes(4, prompt[:12]), block_size=4), inst("cold", block_size=4)
    # warm: 3/4 matched - 1/2 = 0.25 ; cold: 0 - 0 = 0
    assert CacheAware().choose([warm, cold], defaultdict(int), prompt).instance_id == "warm"
    busy = inst("warm", queue=9, hashes=reported_hashes(4, prompt[:12]), block_size=4)
    # busy: 0.75 - 9/10 < 0
    assert CacheAware().choose([busy, cold], defaultdict(int), prompt).instance_id == "cold"
    # a report cut at its limit may leave out a chain's first blocks: the deepest block held still counts
    gap = inst("gap", hashes=reported_hashes(4, prompt)[2:], block_size=4)
    other = inst("other", hashes=reported_hashes(4, prompt[:8]), block_size=4)
    assert CacheAware().choose([gap, other], defaultdict(int), prompt).instance_id == "gap"  # 4/4 vs 2/4
    # no prompt (text without a tokenizer): load decides
    assert CacheAware().choose([warm, cold], defaultdict(int), None).instance_id == "cold"


def test_cache_aware_hashes_in_each_instances_block_size():
    prompt = list(range(200, 232))
    small, large = inst("small", hashes=reported_hashes(4, prompt[:16]), block_size=4), inst("large", block_size=8)
    assert CacheAware().choose([small, large], defaultdict(int), prompt).instance_id == "small"  # 4/8 vs 0
    large = inst("large", hashes=reported_hashes(8, prompt), block_size=8)
    assert CacheAware().choose([small, large], defaultdict(int), prompt).instance_id == "large"  # 4/4


def test_affinity_is_stable_and_moves_only_the_dead_instances_keys():
    pool = [inst(n) for n in "abcd"]
    keys = [f"user-{i}" for i in range(200)]
    before = {k: affinity(pool, k).instance_id for k in keys}
    assert len(set(before.values())) == 4  # spread over every instance
    after = {k: affinity(pool[1:], k).instance_id for k in keys}  # "a" died
    assert all(after[k] == before[k] for k in keys if before[k] != "a")
