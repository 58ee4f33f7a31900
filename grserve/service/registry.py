"""The coordination store: engine instances register in etcd under a lease and heartbeat their load; routers
read the live set.

The key `prefix + instance_id` holds the instance's JSON and is attached to its lease. An instance that stops
refreshing the lease (crash, hang, partition) loses the key TTL seconds later; revoking the lease removes it at
once. Routers poll the prefix (InstanceCache): plain range reads, sturdier than etcd3gw's watch over the
grpc-gateway's streaming API, and cheap for the tens of instances a deployment has."""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import etcd3gw
import requests
from etcd3gw.exceptions import Etcd3Exception
from etcd3gw.lease import Lease

log = logging.getLogger(__name__)

# What heartbeats rewrite: the load, the role (dynamic PD switches it), the models served (loaded and unloaded
# at run time) and their catalogs' versions.
LOAD_FIELDS = frozenset({"queue_depth", "running_rows", "kv_usage", "p99_ms", "prefix_hashes", "role",
                         "role_changed", "catalog_version", "catalog_error", "models"})


class RegistryError(RuntimeError):
    """etcd could not be reached or refused a request."""


@dataclass
class ModelInfo:
    """One model an instance serves, with its catalog's version in the model's shared history (GR)."""
    name: str
    kind: Literal["gr", "llm"]
    catalog_version: int = 0
    catalog_error: str = ""  # why its catalog is out of step with that history ("": in step)

    @classmethod
    def from_dict(cls, data: dict) -> ModelInfo:
        if not isinstance(data, dict):
            raise TypeError(f"a model is a JSON object, got {data!r}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class InstanceInfo:
    instance_id: str  # stable across restarts, e.g. "host:port"
    address: str  # http://host:port
    model: str  # its default model (the first GR model, else its LLM)
    kinds: list[str] = field(default_factory=lambda: ["gr"])  # "gr" and/or "llm"
    # Every model it serves, its default GR model the first GR one; None from an instance that lists none (it
    # serves `model` alone, of the first of `kinds`, with the catalog fields below).
    models: list[ModelInfo] | None = None
    role: Literal["mixed", "prefill", "decode"] = "mixed"
    role_changed: float = 0.0  # unix time of the last dynamic-PD switch (0: never)
    # New with every InstanceInfo, i.e. every process start: a router tells a restart (cold caches, lost
    # requests) from a live instance by a changed value under the same instance_id.
    incarnation: str = field(default_factory=lambda: uuid.uuid4().hex)
    heartbeat_interval: float = 1.0  # seconds; written by the instance so routers know when to suspect it
    block_size: int = 16  # tokens per KV block of the LLM's prefix cache: routers hash prompts in blocks of it
    # Load, rewritten by every heartbeat.
    queue_depth: int = 0
    running_rows: int = 0
    kv_usage: float = 0.0  # 0..1
    p99_ms: float = 0.0
    prefix_hashes: list[int] = field(default_factory=list)  # cached prompt prefixes, for cache-aware routing
    catalog_version: int = 0  # the default GR model's catalog version, in the model's history shared through etcd
    catalog_error: str = ""  # why that catalog is out of step with the history ("": in step)
    updated: float = 0.0  # unix time of the last heartbeat

    def state(self, now: float | None = None) -> Literal["alive", "suspect"]:
        """Suspect once two heartbeats are missing; the key itself lives on until the lease expires.
        Compares the instance's clock with ours: exact on one host, fine across hosts kept in sync by NTP."""
        now = time.time() if now is None else now
        return "suspect" if now - self.updated > 2 * self.heartbeat_interval else "alive"

    def served(self) -> list[ModelInfo]:
        """The models it serves, in its order."""
        if self.models is not None:
            return self.models
        return [ModelInfo(self.model, "gr" if "gr" in self.kinds else "llm", self.catalog_version, self.catalog_error)]

    def serving(self, name: str) -> ModelInfo | None:
        return next((m for m in self.served() if m.name == name), None)

    def default_gr(self) -> str | None:
        """The GR model it answers requests naming none with."""
        return next((m.name for m in self.served() if m.kind == "gr"), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> InstanceInfo:
        data = json.loads(text)
        # Unknown keys are dropped, so routers keep reading while instances of a newer version roll out.
        known = {f.name for f in fields(cls)}
        info = cls(**{k: v for k, v in data.items() if k in known})
        if info.models is not None:
            info.models = [ModelInfo.from_dict(m) for m in info.models]
        return info


class Registry:
    """One etcd client, shared by the registrations and caches made from it."""

    def __init__(self, etcd_url: str, prefix: str = "/grserve/instances/", timeout: float = 2.0) -> None:
        parts = urlsplit(etcd_url)
        if parts.scheme not in ("http", "https") or parts.hostname is None or parts.port is None:
            raise ValueError(f"etcd URL must look like http://host:port, got {etcd_url!r}")
        self.url, self.prefix = etcd_url.rstrip("/"), prefix
        self._client = etcd3gw.client(host=parts.hostname, port=parts.port, protocol=parts.scheme, timeout=timeout)
        # The client's requests.Session is not documented thread-safe, and heartbeat and cache threads share it.
        self._lock = threading.Lock()

    @contextmanager
    def call(self, what: str) -> Iterator[etcd3gw.Etcd3Client]:
        """The client, for one request (of this module's or catalog_history's); etcd3gw's and requests' errors come
        out as RegistryError."""
        with self._lock:
            try:
                yield self._client
            except Etcd3Exception as e:
                raise RegistryError(f"etcd at {self.url}: {what}: {type(e).__name__}: {e.detail_text or e}") from e
            except requests.RequestException as e:
                raise RegistryError(f"etcd at {self.url}: {what}: {e}") from e

    def register(self, info: InstanceInfo, ttl: int = 5) -> Registration:
        """Writes `info` under a new lease of `ttl` seconds; `Registration.info` is what was written."""
        registration = Registration(self, replace(info, updated=time.time()), ttl)
        registration._lease_and_put(registration.info)
        return registration

    def instances(self) -> list[InstanceInfo]:
        """The instances whose leases are live."""
        with self.call(f"listing {self.prefix}") as client:
            entries = client.get_prefix(self.prefix)
        found = []
        for value, meta in entries:
            try:
                found.append(InstanceInfo.from_json(value))
            except (ValueError, TypeError):  # one bad writer must not blind every router
                log.warning("etcd at %s: skipping malformed entry %s", self.url, meta.get("key"))
        return found


class Registration:
    """An instance's key and lease; `info` is what was last written."""

    def __init__(self, registry: Registry, info: InstanceInfo, ttl: int) -> None:
        self.registry, self.info, self.ttl = registry, info, ttl
        self.key = registry.prefix + info.instance_id
        self._lease: Lease | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()  # set: the next heartbeat goes now, not at its interval
        self._thread: threading.Thread | None = None

    def _lease_and_put(self, info: InstanceInfo) -> None:
        with self.registry.call(f"granting a {self.ttl} s lease for {self.key}") as client:
            self._lease = client.lease(self.ttl)
        self._put(info)

    def _put(self, info: InstanceInfo) -> None:
        with self.registry.call(f"writing {self.key}") as client:
            client.put(self.key, info.to_json(), lease=self._lease)
        self.info = info

    def heartbeat(self, load: Mapping[str, Any] | None = None) -> None:
        """Refreshes the lease and rewrites the value with `load` (a subset of LOAD_FIELDS) and a new time."""
        unknown = set(load or {}) - LOAD_FIELDS
        if unknown:
            raise ValueError(f"not load fields: {sorted(unknown)}")
        if self._lease is None:
            raise RuntimeError(f"{self.key} was deregistered")
        info = replace(self.info, **(load or {}), updated=time.time())
        with self.registry.call(f"refreshing the lease of {self.key}"):
            ttl_left = self._lease.refresh()
        if ttl_left > 0:
            self._put(info)
        else:
            # The lease ran out (a stall longer than the TTL) and etcd deleted the key: come back under a new lease,
            # as the same incarnation, since this process and its caches are still the same.
            self._lease_and_put(info)

    def start_heartbeats(self, load_fn: Callable[[], Mapping[str, Any]], interval: float = 1.0) -> None:
        """Heartbeats every `interval` seconds on a daemon thread, with the load `load_fn` reports, until stop()."""
        if self._thread is not None:
            raise RuntimeError(f"heartbeats for {self.key} already running")
        self.info = replace(self.info, heartbeat_interval=interval)
        self._thread = threading.Thread(target=self._beat, args=(load_fn, interval), daemon=True,
                                        name=f"heartbeat {self.info.instance_id}")
        self._thread.start()

    def beat_now(self) -> None:
        """The next heartbeat goes at once (on the heartbeat thread): what it reports has just changed."""
        self._wake.set()

    def _beat(self, load_fn: Callable[[], Mapping[str, Any]], interval: float) -> None:
        while not self._stopping.is_set():
            try:
                self.heartbeat(load_fn())
            except Exception:  # keep beating: etcd may be back before the lease runs out
                log.warning("heartbeat for %s failed", self.key, exc_info=True)
            self._wake.wait(interval)
            self._wake.clear()

    def stop(self, deregister: bool = True) -> None:
        """Stops heartbeats; with `deregister` revokes the lease so the key goes at once, else it expires."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if deregister and self._lease is not None:
            with self.registry.call(f"revoking the lease of {self.key}"):
                self._lease.revoke()
            self._lease = None


class InstanceCache:
    """A router's local view of the live instances, re-read from etcd every `interval` seconds."""

    def __init__(self, registry: Registry, interval: float = 0.5) -> None:
        self.registry, self.interval = registry, interval
        self._instances: dict[str, InstanceInfo] = {}
        self._marked: dict[str, float] = {}  # instance_id -> its `updated` when a caller saw it fail
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> InstanceCache:
        self.refresh()  # filled before start() returns, and an unreachable etcd fails here, loudly
        self._thread = threading.Thread(target=self._poll, daemon=True, name="instance cache")
        self._thread.start()
        return self

    def refresh(self) -> None:
        # Rebinding the dict is atomic: readers see the old view or the new one, never half of each.
        self._instances = {info.instance_id: info for info in self.registry.instances()}

    def _poll(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.refresh()
            except RegistryError:
                # Keep the last view rather than empty the router on an etcd blip; its entries turn suspect
                # as their heartbeats age.
                log.warning("instance cache: refresh failed", exc_info=True)

    def instances(self) -> dict[str, InstanceInfo]:
        """Every instance with a live lease, by instance_id."""
        return dict(self._instances)

    def mark_suspect(self, instance_id: str) -> None:
        """For a router whose request to the instance failed: suspect it until its next heartbeat."""
        info = self._instances.get(instance_id)
        if info is not None:
            self._marked[instance_id] = info.updated

    def is_suspect(self, instance_id: str) -> bool:
        return self._suspect(self._instances[instance_id], time.time())

    def _suspect(self, info: InstanceInfo, now: float) -> bool:
        marked = self._marked.get(info.instance_id)
        return info.state(now) == "suspect" or (marked is not None and info.updated <= marked)

    def alive(self) -> list[InstanceInfo]:
        """The instances to route to: live lease, recent heartbeats, not marked suspect."""
        now = time.time()
        return [info for info in self._instances.values() if not self._suspect(info, now)]

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> InstanceCache:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
