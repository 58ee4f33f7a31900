"""Routing policies: which live instance takes a request.

round-robin cycles; least-loaded takes the lowest load (the queue and beam rows each instance last
reported, plus the requests this router has in flight to it); session affinity maps a session key to an
instance by rendezvous hashing, so a key stays put while its instance lives and moves alone when it dies;
cache-aware (LLM prompts) scores each instance by the share of the prompt's prefix blocks it reports
holding, minus its load.

Every policy takes the request's prompt token ids (None when the router does not know them); only
cache-aware reads them."""
from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from collections.abc import Sequence

from grserve.kv.llm.block_manager import prefix_hashes
from grserve.service.registry import InstanceInfo


def load_of(info: InstanceInfo, inflight: int) -> float:
    return info.queue_depth + info.running_rows / 128 + inflight


class RoundRobin:
    def __init__(self):
        self.counter = itertools.count()

    def choose(self, instances: list[InstanceInfo], inflight: dict, prompt: Sequence[int] | None = None):
        return sorted(instances, key=lambda i: i.instance_id)[next(self.counter) % len(instances)]


class LeastLoaded:
    def choose(self, instances: list[InstanceInfo], inflight: dict, prompt: Sequence[int] | None = None):
        return min(instances, key=lambda i: (load_of(i, inflight[i.instance_id]), i.instance_id))


class CacheAware:
    """score = matched share of the prompt's prefix blocks - load / (1 + max load): a warm cache wins
    unless its instance is much busier than the others."""

    def choose(self, instances: list[InstanceInfo], inflight: dict, prompt: Sequence[int] | None = None):
        loads = {i.instance_id: load_of(i, inflight[i.instance_id]) for i in instances}
        top = max(loads.values()) + 1
        # Hashed once per block size among the instances: a block's name depends on where blocks end.
        hashes = {size: prefix_hashes(prompt or [], size) for size in {i.block_size for i in instances}}

        def score(i: InstanceInfo) -> float:
            held, wanted = set(i.prefix_hashes), hashes[i.block_size]
            # The deepest block held: a chained hash names its whole prefix, and a cache evicts a chain's last
            # block before the blocks before it, so those are held too even when the report, cut at its limit,
            # left them out.
            matched = max((k + 1 for k, h in enumerate(wanted) if h in held), default=0)
            share = matched / len(wanted) if wanted else 0.0
            return share - loads[i.instance_id] / top
        return max(instances, key=lambda i: (score(i), -loads[i.instance_id], i.instance_id))


def affinity(instances: list[InstanceInfo], key: str) -> InstanceInfo:
    """Rendezvous hashing: the instance with the highest hash of (key, instance id)."""
    def weight(i: InstanceInfo) -> int:
        return int.from_bytes(hashlib.blake2b(f"{key}|{i.instance_id}".encode(), digest_size=8).digest(), "big")
    return max(instances, key=weight)


POLICIES = {"round-robin": RoundRobin, "least-loaded": LeastLoaded, "cache-aware": CacheAware}


def new_inflight() -> defaultdict:
    return defaultdict(int)
