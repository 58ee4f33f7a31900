"""A GR model's catalog history in etcd, shared by every instance serving the model: its changes in order, each
written once by a compare-and-swap, so the history is one sequence however many instances publish.

Keys, under `/grserve/catalog/<model>/`:
- `version`: the latest version (absent: 0);
- `changes/<version, 12 digits>`: the change that made it, as its change-log line serializes it (JSON);
- `table`: the fingerprint of the item table version 0 is (change_log.fingerprint), so instances of another
  model that happens to share the name never apply this history.

Publishing version N+1 is one transaction: it succeeds only while `version` is N and `changes/N+1` does not
exist; a writer that lost gets CatalogConflict and must not keep its change. Entries are never rewritten."""
from __future__ import annotations

import base64
import json

from grserve.catalog.change_log import LogConflict
from grserve.errors import InvalidRequest
from grserve.service.registry import Registry

ROOT = "/grserve/catalog/"
# etcd refuses a request over 1.5 MiB (its --max-request-bytes default), and a transaction carries the value in
# base64 (4/3 as long): a change must fit what is left.
MAX_CHANGE_BYTES = 1_100_000
FIELD_OF_KIND = {"add": "items", "remove": "item_ids", "availability": "disable", "rollback": "version"}
READ_BATCH = 64  # changes per range read while catching up: large changes stay within a response's limit


class CatalogConflict(LogConflict):
    """The shared history does not follow this catalog: another instance published the version first, or the
    catalog is out of step with it."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class CatalogHistory:
    def __init__(self, registry: Registry, model: str, root: str = ROOT):
        self.registry, self.model = registry, model
        self.prefix = f"{root}{model}/"
        self.version_key, self.table_key = self.prefix + "version", self.prefix + "table"
        self.changes_prefix = self.prefix + "changes/"

    def key(self, version: int) -> str:
        return f"{self.changes_prefix}{version:012d}"

    def head(self) -> int:
        """The latest version published (0: none)."""
        with self.registry.call(f"reading {self.version_key}") as client:
            values = client.get(self.version_key)
        return int(values[0]) if values else 0

    def entries(self, after: int, upto: int) -> list[dict]:
        """The changes that made versions after+1 .. upto, in order."""
        found, start = [], self.key(after + 1)
        end = self.key(upto) + "\0"  # a range's end is exclusive
        while len(found) < upto - after:
            with self.registry.call(f"reading {self.changes_prefix} from {start}") as client:
                batch = client.get(start, metadata=True, range_end=end, limit=READ_BATCH, sort_order="ascend",
                                   sort_target="key")
            if not batch:
                break
            found += [json.loads(value) for value, _ in batch]
            start = batch[-1][1]["key"].decode() + "\0"
        if [e.get("version") for e in found] != list(range(after + 1, upto + 1)):
            raise CatalogConflict(f"etcd's history of {self.model} lacks versions of {after + 1}..{upto}")
        return found

    def publish(self, entry: dict) -> None:
        """Writes `entry` as version entry["version"], which must be the next; CatalogConflict when another
        writer published that version first (or the history is elsewhere), InvalidRequest when it is too large
        for one etcd request."""
        version, value = entry["version"], json.dumps(entry, separators=(",", ":"))
        if len(value) > MAX_CHANGE_BYTES:
            raise InvalidRequest(FIELD_OF_KIND.get(entry.get("kind"), "items"),
                                 f"this change is {len(value)} bytes as JSON, more than one etcd request holds "
                                 f"({MAX_CHANGE_BYTES}): send it in smaller parts")
        at = {"key": _b64(self.version_key), "result": "EQUAL"}
        previous = ({**at, "target": "CREATE", "create_revision": 0} if version == 1
                    else {**at, "target": "VALUE", "value": _b64(str(version - 1))})
        txn = {"compare": [previous, {"key": _b64(self.key(version)), "result": "EQUAL", "target": "CREATE",
                                      "create_revision": 0}],
               "success": [{"request_put": {"key": _b64(self.key(version)), "value": _b64(value)}},
                           {"request_put": {"key": _b64(self.version_key), "value": _b64(str(version))}}],
               "failure": []}
        with self.registry.call(f"publishing {self.key(version)}") as client:
            won = client.transaction(txn).get("succeeded", False)  # the gateway leaves out a false one
        if not won:
            raise CatalogConflict(f"version {version} of {self.model}'s catalog is already in etcd (published by "
                                  f"another instance, at version {self.head()} now): this change is not applied; "
                                  f"this instance catches up within a poll, then send it again")

    def claim_table(self, fingerprint: str) -> str:
        """Records `fingerprint` as version 0's table unless one is recorded already; the recorded one."""
        with self.registry.call(f"writing {self.table_key}") as client:
            client.create(self.table_key, fingerprint)
            return client.get(self.table_key)[0].decode()
