"""Router test helpers. A fake engine instance: a raw-socket HTTP/1.1 server on loopback whose answer each test
scripts (JSON naming it, a server-sent event stream that may die midway, a dropped connection), registered in
etcd with heartbeats as `grserve serve --register` does. Raw sockets, so a stream can die as a crashed process's
does: mid-body, with a FIN or a reset."""
from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable
from typing import Literal

import httpx

from grserve.kv.llm.block_manager import BlockManager
from grserve.service.registry import InstanceInfo, Registry

Answer = Callable[[socket.socket], None]


class FakeInstance:
    """Each connection reads one request, records (path, JSON body) in `requests`, then runs `answer`. With no
    `answer` the port refuses connections, as a crashed process's does until its lease expires."""

    def __init__(self, registry: Registry, name: str, answer: Answer | None, block_size: int = 16,
                 prefix_hashes: list[int] | None = None, kinds: tuple[str, ...] = ("llm",)):
        self.answer = answer
        self.requests: list[tuple[str, dict]] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        port = self._sock.getsockname()[1]
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        if answer is None:
            self._sock.close()
        else:
            self._acceptor.start()
        info = InstanceInfo(instance_id=name, address=f"http://127.0.0.1:{port}", model="fake-llm", kinds=list(kinds),
                            block_size=block_size, prefix_hashes=list(prefix_hashes or []))
        self.registration = registry.register(info, ttl=5)
        # alive, with no load to report; beats well inside the 2-beat suspicion window even on a busy machine
        self.registration.start_heartbeats(dict, interval=1.0)

    def _accept(self) -> None:
        with self._sock:  # closed here, not under a blocked accept()
            while not self._stopping.is_set():
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                conn.settimeout(None)
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                           if k.strip().lower() == "content-length"), 0)
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append((lines[0].split()[1], json.loads(body or b"{}")))
            self.answer(conn)

    def close(self) -> None:
        self.registration.stop()
        self._stopping.set()
        if self._acceptor.is_alive():
            self._acceptor.join()


def reported_hashes(block_size: int, *prompts: list[int]) -> list[int]:
    """What an instance whose engine served `prompts` reports: its BlockManager's registered hashes."""
    manager = BlockManager(256, block_size)
    for tokens in prompts:
        table, _ = manager.allocate(tokens)
        manager.append_slot(table, tokens)  # as the engine does before the prompt's prefill step
    return manager.registered_hashes(limit=4096)


def answer_json(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    def answer(conn: socket.socket) -> None:
        payload = json.dumps(body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        conn.sendall(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n"
                     f"{extra}connection: close\r\n\r\n".encode() + payload)
    return answer


def answer_after(release: threading.Event, answer: Answer) -> Answer:
    """`answer`, once `release` is set (or after 30 s): an instance still computing."""
    def delayed(conn: socket.socket) -> None:
        release.wait(30)
        answer(conn)
    return delayed


def drop(conn: socket.socket) -> None:
    """Closes the connection without a byte of answer."""


def answer_stream(events: list[bytes], end: Literal["done", "fin", "reset"],
                  before_end: threading.Event | None = None) -> Answer:
    """A chunked text/event-stream answer, one chunk per entry of `events` (each as given: an entry may be half
    an event); then, once `before_end` is set, `data: [DONE]` and the last chunk ("done"), or the connection
    closed mid-body ("fin"), or reset ("reset")."""
    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                     b"connection: close\r\n\r\n")
        for event in events:
            conn.sendall(chunk(event))
        if before_end is not None:
            before_end.wait(30)
        if end == "done":
            conn.sendall(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        elif end == "reset":  # a zero linger turns close() into a RST
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return answer


def sse_data(response_lines) -> list[str]:
    """The `data:` payloads of a server-sent event stream, in order."""
    return [line[len("data: "):] for line in response_lines if line.startswith("data: ")]


def forwarded(router_url: str) -> dict[str, float]:
    """The requests a router forwarded, by instance, from its metrics."""
    return {line.split('instance="')[1].split('"')[0]: float(line.split()[-1])
            for line in httpx.get(router_url + "/metrics").text.splitlines()
            if line.startswith("grserve_router:forwarded_total{")}
