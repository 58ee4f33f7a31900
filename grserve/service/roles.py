"""Dynamic PD: an LLM instance switches between the prefill and decode roles as the load between the two
pools shifts, as xLLM's instances do. Every engine can run both phases, so a role only says which traffic the
routers send it; switching needs no restart and in-flight requests finish where they are.

Each instance decides for itself from the registry it already reads, with no lock: all instances compute the
same answer from the same snapshot (the pool that is short gets the least-loaded donor of the other pool,
ties broken by instance id), and a cooldown after any switch lets the heartbeats catch up before the next."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from grserve.service.registry import InstanceInfo, Registration, Registry

log = logging.getLogger("grserve")


@dataclass
class RolePolicy:
    queue_threshold: float = 4.0  # waiting prompts per instance of a pool that count as pressure
    kv_threshold: float = 0.9  # decode pool: mean KV use that counts as pressure
    cooldown_s: float = 10.0  # no switch while any instance switched less than this ago


def _pressure(pool: list[InstanceInfo], policy: RolePolicy, decode: bool) -> float:
    """How far past its thresholds a pool is: >= 1 means it needs another instance, 0 means idle."""
    if not pool:
        return 0.0
    queue = sum(i.queue_depth for i in pool) / len(pool) / policy.queue_threshold
    kv = sum(i.kv_usage for i in pool) / len(pool) / policy.kv_threshold if decode else 0.0
    return max(queue, kv)


def next_role(me: InstanceInfo, instances: list[InstanceInfo], policy: RolePolicy,
              now: float | None = None) -> str | None:
    """The role `me` should switch to now ("prefill" or "decode"), or None to stay. Only instances in one of
    the two roles and serving the same model take part; a pool never drops below one instance."""
    if me.role not in ("prefill", "decode"):
        return None
    now = time.time() if now is None else now
    peers = [i for i in instances if i.model == me.model and i.role in ("prefill", "decode")]
    if any(now - i.role_changed < policy.cooldown_s for i in peers):
        return None
    pools = {role: [i for i in peers if i.role == role] for role in ("prefill", "decode")}
    pressure = {role: _pressure(pool, policy, role == "decode") for role, pool in pools.items()}
    other = "decode" if me.role == "prefill" else "prefill"
    # The short pool must be under pressure and the donor pool clearly less so, or roles would flap.
    if pressure[other] < 1 or pressure[me.role] >= pressure[other] / 2 or len(pools[me.role]) < 2:
        return None
    donor = min(pools[me.role], key=lambda i: (i.queue_depth + i.running_rows, i.instance_id))
    return other if donor.instance_id == me.instance_id else None


class RoleSwitcher:
    """Called by an instance's heartbeat: reads the registry and returns the role fields to write with the
    load (empty when it stays)."""

    def __init__(self, registry: Registry, registration: Registration, policy: RolePolicy | None = None):
        self.registry, self.registration, self.policy = registry, registration, policy or RolePolicy()

    def __call__(self) -> dict:
        me = self.registration.info
        role = next_role(me, self.registry.instances(), self.policy)
        if role is None:
            return {}
        log.info("dynamic PD: %s switches from %s to %s", me.instance_id, me.role, role)
        return {"role": role, "role_changed": time.time()}
