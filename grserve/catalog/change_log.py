"""The catalog's durable change log: `changes.jsonl` in a state directory, one JSON line per change, each on
disk (written, flushed, fsync'd) before the change is acknowledged.

The first line names the item table the changes apply to (a fingerprint of the model directory's table), so a
state directory is never replayed over another model. A process killed while writing leaves a torn last line:
loading discards it (and truncates it away), so the catalog comes back at the last acknowledged version, never
torn. A torn line anywhere else is corruption and stops the load. Appends hold an exclusive lock and check that
the file is as this process left it, so two servers sharing a state directory fail loudly rather than
interleave their versions. The model directory itself is never written."""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path

from grserve.items.item_table import ItemTable

FORMAT = "grserve-catalog-log-v1"
LOG_NAME = "changes.jsonl"


class LogConflict(RuntimeError):
    """Another writer got to the log first: another process to this state directory's, or another instance to
    the history its model's instances share (grserve/service/catalog_history.py)."""


class LogUnavailable(RuntimeError):
    """The shared history cannot be written now (etcd unreachable): the change is not applied."""


def fingerprint(table: ItemTable) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(table.codebook_size).encode())
    h.update(table.codes.tobytes())
    h.update("\0".join(table.raw_ids).encode())
    return h.hexdigest()


def default_state_dir(model_name: str) -> Path:
    """`$XDG_CACHE_HOME/grserve/catalog/<model name>`, by default under `~/.cache`."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "grserve" / "catalog" / model_name


def _line(entry: dict) -> bytes:
    return (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class ChangeLog:
    def __init__(self, directory: str | Path, table_fingerprint: str):
        self.path = Path(directory) / LOG_NAME
        self.fingerprint = table_fingerprint
        self._size = 0  # bytes of the log as this process last read or wrote it

    def load(self) -> list[dict]:
        """Every acknowledged entry, in order (versions 1, 2, ...); a torn last line is truncated away."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1  # bytes past the last newline are a write that never finished
        entries, lines = [], data[:end].split(b"\n")[:-1]
        for n, line in enumerate(lines):
            try:
                entries.append(json.loads(line))
            except ValueError:
                if n < len(lines) - 1:
                    raise ValueError(f"{self.path}: line {n + 1} is corrupt (not JSON); only a last line may be "
                                     f"torn") from None
                end -= len(line) + 1  # a last line whose bytes never all reached the disk
        if end < len(data):
            logging.getLogger("grserve").warning("%s: discarding a torn last line (%d bytes)", self.path,
                                                 len(data) - end)
            os.truncate(self.path, end)
        self._size = end
        if not entries:
            return []
        self._check(entries)
        return entries[1:]

    def _check(self, entries: list[dict]) -> None:
        header = entries[0]
        if header.get("format") != FORMAT:
            raise ValueError(f"{self.path}: not a catalog log (format {header.get('format')!r}, expected {FORMAT!r})")
        if header.get("table") != self.fingerprint:
            raise ValueError(f"{self.path}: the changes of another model's item table; give this model its own "
                             f"--state-dir")
        for version, entry in enumerate(entries[1:], 1):
            if entry.get("version") != version:
                raise ValueError(f"{self.path}: entry {version} has version {entry.get('version')!r}")

    def append(self, entry: dict) -> None:
        """Durable when it returns: the line is on disk (and, for the first, the file's directory entry)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size != self._size:
                raise LogConflict(f"{self.path} changed under this server ({size} bytes, expected {self._size}): "
                                  f"another process writes to this state directory; give each its own --state-dir")
            data = (_line({"format": FORMAT, "table": self.fingerprint}) if size == 0 else b"") + _line(entry)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:  # a disk that filled up mid-line: the half line goes, the log stays appendable
                os.ftruncate(fd, size)
                raise
            if size == 0:
                _fsync_dir(self.path.parent)
            self._size = size + len(data)
        finally:
            os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
