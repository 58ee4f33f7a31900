"""A real uvicorn server on a free loopback port, in a thread, over a given app; or a real `grserve serve`
process."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def wait_healthy(url: str, proc: subprocess.Popen, start_s: float) -> None:
    """Returns once the server at `url` answers /health with 200; fails if `proc` exits or `start_s` passes."""
    deadline = time.monotonic() + start_s
    while True:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
        time.sleep(0.2)


@contextlib.contextmanager
def grserve_serve(*args: str, start_s: float = 120):
    """`grserve serve ARGS` on a free port, once /health answers 200 (within `start_s`, a bound for slow machines);
    its URL. Terminated (killed if it will not stop) on exit."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "grserve", "serve", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, start_s)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
