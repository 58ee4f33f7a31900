"""Running the server under uvicorn, with a graceful drain on SIGTERM/SIGINT: stop admitting (503),
let every admitted request finish (up to `drain_timeout_s`), then exit 0. A second signal exits at once."""
from __future__ import annotations

import logging
import threading
import time

import torch
import uvicorn

from grserve.server.app import create_app
from grserve.server.config import ServerConfig


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state, drain_timeout_s: float):
        super().__init__(config)
        self.state, self.drain_timeout_s = state, drain_timeout_s

    def handle_exit(self, sig, frame) -> None:
        if self.state.draining:
            return super().handle_exit(sig, frame)
        self.state.draining = True
        logging.getLogger("grserve").info("draining: %d requests in flight", self.state.inflight)

        def wait_then_exit():
            deadline = time.monotonic() + self.drain_timeout_s
            while self.state.inflight and time.monotonic() < deadline:
                time.sleep(0.02)
            self.should_exit = True

        threading.Thread(target=wait_then_exit, name="grserve-drain", daemon=True).start()


def run_server(config: ServerConfig) -> None:
    if config.threads:
        torch.set_num_threads(config.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    app = create_app(config)
    server = DrainingServer(uvicorn.Config(app, host=config.host, port=config.port, log_level="info",
                                           timeout_graceful_shutdown=int(config.drain_timeout_s) + 1),
                            app.state.grserve, config.drain_timeout_s)
    server.run()
