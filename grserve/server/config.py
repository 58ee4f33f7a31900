"""Server configuration: the server's own settings and the two engines' configs, filled from an optional TOML
or YAML file, then CLI flags. Files and flags name every setting flat (`max_batch_rows`, `block_size`); each
goes to the config that owns it, so no setting is defined twice; each carries its one-line help (`setting`),
which `grserve serve --help` shows."""
from __future__ import annotations

import os
import tomllib
from dataclasses import Field, dataclass, field, fields
from pathlib import Path

import yaml

from grserve.engine.config import setting
from grserve.engine.gr.config import EngineConfig, step_target_ms
from grserve.engine.llm.config import LLMEngineConfig
from grserve.server.model_spec import GR, LLM, ModelSpec


@dataclass
class ServerConfig:
    model: str | list[str] | None = setting(None, "a model directory, GR or LLM (Llama or Qwen3, Hugging Face format: "
                                                  "the OpenAI routes serve it), as DIR or NAME=DIR (NAME: what "
                                                  "requests call it; default the directory's name); repeat it for "
                                                  "several models (one LLM at most): requests that name none go to "
                                                  "the first GR model; `beauty` or `ml-100k`: a model shipped in "
                                                  "the package; unset: the embedded MovieLens-100K model")
    llm_model: str | None = setting(None, "LLM directory (Llama or Qwen3, Hugging Face format) served beside the "
                                          "GR model(s) on the OpenAI routes (as --model DIR of an LLM does)")
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(8000, "port to listen on")
    default_timeout_ms: int = setting(1000, "deadline of a request that sets no timeout_ms")
    max_timeout_ms: int = setting(60000, "largest timeout_ms a request may set (larger: 400)")
    history_overflow: str = setting("truncate", "a history longer than the model's context: truncate (the oldest "
                                                "items dropped, with a warning) or reject (400)")
    max_body_bytes: int = setting(1 << 20, "largest request body in bytes (larger: 413)")
    max_batch_items: int = setting(256, "most histories in one /v1/recommend/batch call")
    threads: int = setting(0, "torch threads; 0: the CPUs this process may use (its affinity mask, capped "
                                 "by its cgroup CPU quota)")
    drain_timeout_s: float = setting(30.0, "after SIGTERM, seconds to wait for admitted requests before exiting")
    log_requests: bool = setting(False, "log one JSON line per request at INFO")
    register: str | None = setting(None, "etcd URL: register this instance there under a lease, with heartbeats")
    role: str = setting("mixed", "disaggregation role: mixed, prefill or decode")
    dynamic_pd: bool = setting(False, "let a prefill or decode instance switch role as the load between the pools "
                                      "shifts (needs --register)")
    advertise: str | None = setting(None, "the address routers reach this instance at; unset: http://host:port")
    lease_ttl_s: int = setting(5, "seconds the etcd lease outlives the last heartbeat")
    heartbeat_s: float = setting(1.0, "seconds between heartbeats to etcd")
    catalog_poll_s: float = setting(0.25, "with --register, seconds between reads of the model's catalog history in "
                                          "etcd (changes made through other instances)")
    state_dir: str | None = setting(None, "directory of the live catalog's change log, replayed at start; with "
                                          "several GR models, put {model} in it (DIR/{model}) so that each keeps "
                                          "its own; unset: grserve serve keeps each in "
                                          "$XDG_CACHE_HOME/grserve/catalog/<model> (~/.cache/...), a server made "
                                          "in process keeps its catalogs in memory")
    catalog_process: bool | None = setting(None, "run the live catalog in a process of its own, so that its changes "
                                                 "never hold the GIL beside the engine's steps; unset: for "
                                                 "catalogs of 100,000 items or more")
    admin_token: str | None = setting(None, "token the admin routes (/v1/catalog changes, loading and unloading "
                                            "models) require as Authorization: Bearer; unset: "
                                            "$GRSERVE_ADMIN_TOKEN, and with neither they answer 403")
    api_key: str | None = setting(None, "key every public /v1/* route then requires as Authorization: Bearer "
                                        "(/health and /metrics stay open); unset: $GRSERVE_API_KEY, else none")
    models: list[ModelSpec] = field(default_factory=list)  # what `model` and `llm_model` name, in their order
    engine: EngineConfig = field(default_factory=EngineConfig)  # the GR engine
    llm: LLMEngineConfig = field(default_factory=LLMEngineConfig)  # the LLM engine, when one is served

    def __post_init__(self) -> None:
        self.models = served_models(self.model, self.llm_model)
        if self.state_dir and "{model}" not in self.state_dir and len(self.gr_models) > 1:
            raise ValueError(f"state_dir: {len(self.gr_models)} GR models cannot share one change log: put {{model}} "
                             f"in it ({self.state_dir}/{{model}})")
        if self.history_overflow not in ("truncate", "reject"):
            raise ValueError(f"history_overflow must be 'truncate' or 'reject', got {self.history_overflow!r}")
        if self.role not in ("mixed", "prefill", "decode"):
            raise ValueError(f"role must be mixed, prefill or decode, got {self.role!r}")
        if self.dynamic_pd and (self.role == "mixed" or not self.register):
            raise ValueError("dynamic_pd: needs role prefill or decode and --register (it reads the other instances)")
        if not 1 <= self.default_timeout_ms <= self.max_timeout_ms:
            raise ValueError("default_timeout_ms must be in [1, max_timeout_ms]")
        # From the environment rather than a flag, so that a secret stays out of `ps` and shell history.
        self.admin_token = self.admin_token or os.environ.get("GRSERVE_ADMIN_TOKEN") or None
        self.api_key = self.api_key or os.environ.get("GRSERVE_API_KEY") or None
        if self.engine.target_step_ms is None:  # out of the box, steps fit the deadline requests get by default
            self.engine.target_step_ms = step_target_ms(self.default_timeout_ms)

    @property
    def gr_models(self) -> list[ModelSpec]:
        return [m for m in self.models if m.kind == GR]

    def state_dir_of(self, name: str) -> str | None:
        """Where model `name`'s change log lives: `state_dir` with {model} replaced; one without {model} is the
        first GR model's alone (None: in memory)."""
        if self.state_dir is None or "{model}" in self.state_dir:
            return self.state_dir and self.state_dir.replace("{model}", name)
        if self.gr_models and self.gr_models[0].name != name:
            raise ValueError(f"state_dir: {self.state_dir} is the change log of {self.gr_models[0].name}: start the "
                             f"server with {{model}} in --state-dir to serve more GR models")
        return self.state_dir

    @classmethod
    def _own(cls) -> list[Field]:
        return [f for f in fields(cls) if f.name not in ("engine", "llm", "models")]

    @classmethod
    def settings(cls) -> dict[str, Field]:
        """Every setting by its flat name (as in a config file or a flag): the server's own, then the two
        engines' (a name both engines have, such as device, sets both)."""
        return {f.name: f for c in (LLMEngineConfig, EngineConfig) for f in fields(c)} | {f.name: f for f in cls._own()}

    @classmethod
    def groups(cls) -> dict[str, list[Field]]:
        """The settings by the config that owns them, as `--help` lists them (a name both engines have comes
        once, under the GR engine)."""
        gr = fields(EngineConfig)
        return {"server": cls._own(), "GR engine": gr,
                "LLM engine": [f for f in fields(LLMEngineConfig) if f.name not in {g.name for g in gr}]}

    @classmethod
    def help_text(cls, name: str) -> str:
        """The one-line help of a flat setting; a name both engines have sets both, and says so."""
        owners = [c for c in (cls, EngineConfig, LLMEngineConfig) if name in {f.name for f in fields(c)}]
        texts = list(dict.fromkeys(next(f for f in fields(c) if f.name == name).metadata["help"] for c in owners))
        return "; ".join(texts) + (" (both engines)" if len(owners) > 1 else "")

    @classmethod
    def of(cls, **settings) -> ServerConfig:
        """A config from flat settings, each going to the server or to the engine(s) that have it."""
        unknown = sorted(set(settings) - set(cls.settings()))
        if unknown:
            raise ValueError(f"unknown settings {unknown}")

        def share(owned: list[Field]) -> dict:
            names = {f.name for f in owned}
            return {k: v for k, v in settings.items() if k in names}
        return cls(**share(cls._own()), engine=EngineConfig(**share(fields(EngineConfig))),
                   llm=LLMEngineConfig(**share(fields(LLMEngineConfig))))

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> ServerConfig:
        """Values from `path` (.toml, .yaml or .yml), then every override that is not None."""
        values: dict = {}
        if path:
            path = Path(path)
            text = path.read_text()
            values = tomllib.loads(text) if path.suffix == ".toml" else (yaml.safe_load(text) or {})
            if not isinstance(values, dict):
                raise ValueError(f"{path}: expected a table of settings")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.of(**values)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}" if path else str(e)) from None


def served_models(model: str | list[str] | None, llm_model: str | None) -> list[ModelSpec]:
    """The models `model` (one or several) and `llm_model` name: the embedded GR model when `model` names none;
    ValueError for two models of one name or more than one LLM."""
    given = [model] if isinstance(model, str) else list(model or [])
    specs = [ModelSpec.parse(m) for m in given] or [ModelSpec.default()]
    if llm_model:
        specs.append(ModelSpec.parse(llm_model, LLM))
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"model: two models named {twice[0]!r}: name them apart with NAME=DIR")
    llms = [s.name for s in specs if s.kind == LLM]
    if len(llms) > 1:
        raise ValueError(f"model: one LLM per server (the OpenAI routes' engine), got {llms}")
    return specs
