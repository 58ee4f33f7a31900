"""Running the server under uvicorn, with a graceful drain on SIGTERM/SIGINT: stop admitting (503),
let every admitted request finish (up to `drain_timeout_s`), then exit 0. A second signal exits at once.
A model that cannot load stops the server and exits 1 (the error is logged): a supervisor restarts it, and a
person sees why rather than a server that runs and answers only 503."""
from __future__ import annotations

import gc
import logging
import threading
import time

import uvicorn

from grserve.catalog.change_log import default_state_dir
from grserve.server.app import create_app, model_name
from grserve.server.config import ServerConfig
from grserve.server.threads import size_torch_threads


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state, drain_timeout_s: float):
        super().__init__(config)
        self.state, self.drain_timeout_s = state, drain_timeout_s
        self.registration = None

    def handle_exit(self, sig, frame) -> None:
        if self.state.draining:
            return super().handle_exit(sig, frame)
        self.state.draining = True
        if self.registration is not None:  # routers stop sending here before the drain begins
            threading.Thread(target=self.registration.stop, daemon=True).start()
        logging.getLogger("grserve").info("draining: %d requests in flight", self.state.inflight)

        def wait_then_exit():
            deadline = time.monotonic() + self.drain_timeout_s
            while self.state.inflight and time.monotonic() < deadline:
                time.sleep(0.02)
            self.should_exit = True

        threading.Thread(target=wait_then_exit, name="grserve-drain", daemon=True).start()


def run_server(config: ServerConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Before the model loads: torch's default is every core of the host, which oversubscribes the CPUs when
    # an affinity mask, a cgroup quota or other instances on the host leave this process fewer.
    size_torch_threads(config.threads)
    if config.gr_model:  # a served catalog outlives the process
        config.state_dir = config.state_dir or str(default_state_dir(model_name(config.model)))
        logging.getLogger("grserve").info("live catalog: change log in %s", config.state_dir)
    app = create_app(config)
    server = DrainingServer(uvicorn.Config(app, host=config.host, port=config.port, log_level="info",
                                           # one line per request only when asked: under overload (300 req/s) the
                                           # access log took ~15% of the event loop's time
                                           access_log=config.log_requests,
                                           timeout_graceful_shutdown=int(config.drain_timeout_s) + 1),
                            app.state.grserve, config.drain_timeout_s)
    if config.register:
        threading.Thread(target=register_when_ready, args=(server, config), name="grserve-register",
                         daemon=True).start()
    threading.Thread(target=after_load, args=(server,), name="grserve-load-watch", daemon=True).start()
    server.run()
    if server.state.load_error:
        raise SystemExit(f"grserve serve: {server.state.load_error}")  # exit status 1, the reason on stderr


def after_load(server: DrainingServer) -> None:
    """Waits for the models: stops the server when they fail to load; once they have loaded, takes the heap
    built so far out of the garbage collector's sight."""
    state = server.state
    while not (state.loaded or state.load_error or server.should_exit):
        time.sleep(0.05)
    if state.load_error:
        server.should_exit = True
    elif state.loaded:
        # A full collection walks every object: over the ~200k of the libraries, model and tables it holds the
        # GIL ~100 ms, stalling the event loop and the step thread alike (429s took 100+ ms under overload).
        # What exists once loaded lives until exit, so it is frozen, as vLLM freezes its start-up heap.
        gc.collect()
        gc.freeze()


def instance_load(state) -> dict:
    """What heartbeats report: the GR engine's queue and beam rows, the LLM cache's use and prefix blocks."""
    load = {"queue_depth": 0, "running_rows": 0, "kv_usage": 0.0, "prefix_hashes": []}
    if state.recommender is not None:
        engine = state.recommender.engine
        load["queue_depth"] += engine.waiting_requests
        load["running_rows"] += engine.running_rows
    if state.llm is not None:
        blocks = state.llm.blocks
        load["queue_depth"] += len(state.llm.scheduler.waiting)
        load["kv_usage"] = blocks.blocks_in_use / blocks.num_blocks
        load["prefix_hashes"] = blocks.registered_hashes(limit=4096)
    return load


def register_when_ready(server: DrainingServer, config: ServerConfig) -> None:
    """Registers once the socket listens and the models are loaded, with a GR catalog caught up with its
    model's history in etcd, then heartbeats until drained."""
    from grserve.service.catalog_history import CatalogHistory
    from grserve.service.catalog_sync import CatalogSync
    from grserve.service.registry import InstanceInfo, Registry
    from grserve.service.roles import RoleSwitcher
    state = server.state
    while not (server.started and state.loaded) and not server.should_exit:
        time.sleep(0.05)
    if server.should_exit:
        return
    registry = Registry(config.register)
    sync = None
    if state.recommender is not None:
        sync = CatalogSync(CatalogHistory(registry, state.model_name), state.recommender.catalog,
                           config.catalog_poll_s).start()
    catalog_fields = sync.report if sync is not None else dict
    kinds = (["gr"] if config.gr_model else []) + (["llm"] if config.llm_model else [])
    info = InstanceInfo(instance_id=f"{config.host}:{config.port}",
                        address=config.advertise or f"http://{config.host}:{config.port}",
                        model=state.model_name if config.gr_model else state.llm_name, kinds=kinds, role=config.role,
                        **catalog_fields())
    if state.llm is not None:
        info.block_size = state.llm.blocks.block_size
    server.registration = registry.register(info, ttl=config.lease_ttl_s)
    if sync is not None:  # routers see a new version at once, not a heartbeat later
        sync.on_change = server.registration.beat_now
    switch = RoleSwitcher(registry, server.registration) if config.dynamic_pd else dict
    server.registration.start_heartbeats(lambda: {**instance_load(state), **catalog_fields(), **switch()},
                                         interval=config.heartbeat_s)
    logging.getLogger("grserve").info("registered %s (incarnation %s) in %s", info.instance_id, info.incarnation,
                                      config.register)
