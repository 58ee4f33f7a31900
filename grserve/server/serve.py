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
from grserve.engine.compute_threads import keep_threads_for_compute
from grserve.server.app import create_app
from grserve.server.config import ServerConfig
from grserve.server.model_spec import GR
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
    # The compute thread that every engine hands its steps computes on them; this thread, which loads the
    # models and serves HTTP, on one, so that it never holds a thread team beside its (engine/compute_threads.py).
    keep_threads_for_compute(size_torch_threads(config.threads))
    if config.gr_models:  # a served catalog outlives the process
        config.state_dir = config.state_dir or str(default_state_dir("{model}"))
        logging.getLogger("grserve").info("live catalogs: change logs in %s", config.state_dir)
    app = create_app(config)
    server = DrainingServer(uvicorn.Config(app, host=config.host, port=config.port, log_level="info",
                                           # one line per request only when asked: under overload (300 req/s) the
                                           # access log took ~15% of the event loop's time
                                           access_log=config.log_requests,
                                           timeout_graceful_shutdown=int(config.drain_timeout_s) + 1),
                            app.state.grserve, config.drain_timeout_s)
    if config.register:
        from grserve.service.registry import Registry
        registry = Registry(config.register)
        server.state.follow = lambda model: follow_history(server, registry, model)  # before any model loads
        threading.Thread(target=register_when_ready, args=(server, config, registry), name="grserve-register",
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
    """What heartbeats report: the GR engines' queues and beam rows, the LLM cache's use and prefix blocks."""
    load = {"queue_depth": 0, "running_rows": 0, "kv_usage": 0.0, "prefix_hashes": []}
    for model in state.models.of_kind(GR):
        engine = model.recommender.engine
        load["queue_depth"] += engine.waiting_requests
        load["running_rows"] += engine.running_rows
    if state.llm is not None:
        blocks = state.llm.blocks
        load["queue_depth"] += len(state.llm.scheduler.waiting)
        load["kv_usage"] = blocks.blocks_in_use / blocks.num_blocks
        load["prefix_hashes"] = blocks.registered_hashes(limit=4096)
    return load


def served_fields(state) -> dict:
    """What heartbeats say of the models served: each one with its catalog's version and state, and (for routers
    that read only those) the default GR model's catalog fields."""
    from grserve.service.registry import ModelInfo
    models = [ModelInfo(m.name, m.kind, **m.catalog_report()) for m in state.models]
    default = state.models.default_gr()
    return {"models": models, **(default.catalog_report() if default is not None else {})}


def follow_history(server: DrainingServer, registry, model):
    """The catalog sync of a GR model being loaded: caught up with its history in etcd before it returns, then
    following it; a new version heartbeats at once (once registered)."""
    from grserve.service.catalog_history import CatalogHistory
    from grserve.service.catalog_sync import CatalogSync
    config = server.state.config
    sync = CatalogSync(CatalogHistory(registry, model.name), model.recommender.catalog, config.catalog_poll_s)

    def beat() -> None:
        if server.registration is not None:
            server.registration.beat_now()
    sync.on_change = beat
    return sync.start()


def register_when_ready(server: DrainingServer, config: ServerConfig, registry) -> None:
    """Registers once the socket listens and the models are loaded (each GR catalog caught up with its model's
    history in etcd as it loaded), then heartbeats until drained; a change of the models served beats at once."""
    from grserve.service.registry import InstanceInfo
    from grserve.service.roles import RoleSwitcher
    state = server.state
    while not (server.started and state.loaded) and not server.should_exit:
        time.sleep(0.05)
    if server.should_exit:
        return
    default = state.models.default_gr() or state.models.llm()
    info = InstanceInfo(instance_id=f"{config.host}:{config.port}",
                        address=config.advertise or f"http://{config.host}:{config.port}",
                        model=default.name if default else "", kinds=sorted({m.kind for m in state.models}),
                        role=config.role, **served_fields(state))
    if state.llm is not None:
        info.block_size = state.llm.blocks.block_size
    server.registration = registry.register(info, ttl=config.lease_ttl_s)
    state.on_models_changed = server.registration.beat_now
    switch = RoleSwitcher(registry, server.registration) if config.dynamic_pd else dict
    server.registration.start_heartbeats(lambda: {**instance_load(state), **served_fields(state), **switch()},
                                         interval=config.heartbeat_s)
    logging.getLogger("grserve").info("registered %s (incarnation %s) in %s", info.instance_id, info.incarnation,
                                      config.register)
