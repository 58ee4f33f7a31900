"""Server configuration: the server's own settings and the two engines' configs, filled from an optional TOML
or YAML file, then CLI flags. Files and flags name every setting flat (`max_batch_rows`, `block_size`); each
goes to the config that owns it, so no setting is defined twice."""
from __future__ import annotations

import tomllib
from dataclasses import Field, dataclass, field, fields
from pathlib import Path

import yaml

from grserve.engine.config import EngineConfig, LLMEngineConfig


@dataclass
class ServerConfig:
    model: str | None = None  # GR model directory (None: the embedded MovieLens-100K model), or an LLM's
    llm_model: str | None = None  # an LLM directory served beside the GR model
    host: str = "127.0.0.1"
    port: int = 8000
    default_timeout_ms: int = 1000
    max_timeout_ms: int = 60000
    history_overflow: str = "truncate"  # or "reject": a history longer than the model's context
    max_body_bytes: int = 1 << 20
    max_batch_items: int = 256  # histories in one /v1/recommend/batch call
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    drain_timeout_s: float = 30.0
    log_requests: bool = False  # one JSON line per request at INFO
    register: str | None = None  # etcd URL: register this instance there under a lease, with heartbeats
    role: str = "mixed"  # mixed | prefill | decode
    dynamic_pd: bool = False  # a prefill or decode instance switches role as the load between the pools shifts
    advertise: str | None = None  # the address routers use (default http://host:port)
    lease_ttl_s: int = 5
    heartbeat_s: float = 1.0
    gr_model: bool = True  # False when `model` names an LLM directory: only the OpenAI routes serve then
    engine: EngineConfig = field(default_factory=EngineConfig)  # the GR engine
    llm: LLMEngineConfig = field(default_factory=LLMEngineConfig)  # the LLM engine, when one is served

    def __post_init__(self) -> None:
        model = Path(self.model) if self.model else None
        if model and (model / "config.json").exists() and not (model / "gr_config.json").exists():
            if self.llm_model is not None:
                raise ValueError(f"model: {model} is not a GR model directory (no gr_config.json)")
            self.llm_model, self.model, self.gr_model = self.model, None, False
        if self.history_overflow not in ("truncate", "reject"):
            raise ValueError(f"history_overflow must be 'truncate' or 'reject', got {self.history_overflow!r}")
        if self.role not in ("mixed", "prefill", "decode"):
            raise ValueError(f"role must be mixed, prefill or decode, got {self.role!r}")
        if self.dynamic_pd and (self.role == "mixed" or not self.register):
            raise ValueError("dynamic_pd: needs role prefill or decode and --register (it reads the other instances)")
        if not 1 <= self.default_timeout_ms <= self.max_timeout_ms:
            raise ValueError("default_timeout_ms must be in [1, max_timeout_ms]")

    @classmethod
    def _own(cls) -> list[Field]:
        return [f for f in fields(cls) if f.name not in ("engine", "llm", "gr_model")]

    @classmethod
    def settings(cls) -> dict[str, Field]:
        """Every setting by its flat name (as in a config file or a flag): the server's own, then the two
        engines' (a name both engines have, such as device, sets both)."""
        return {f.name: f for c in (LLMEngineConfig, EngineConfig) for f in fields(c)} | {f.name: f for f in cls._own()}

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
