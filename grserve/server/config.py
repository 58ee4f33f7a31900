"""Server configuration: one dataclass, filled from an optional TOML or YAML file, then CLI flags."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from grserve.engine.config import EngineConfig


@dataclass
class ServerConfig:
    model: str | None = None  # GR model directory (None: the embedded MovieLens-100K model), or an LLM's
    llm_model: str | None = None  # an LLM directory served beside the GR model
    kv_cache_bytes: int = 256 << 20  # the LLM's paged KV cache
    max_num_batched_tokens: int = 512  # LLM tokens per step (chunked prefill)
    speculative_tokens: int = 0  # LLM: greedy speculation depth (0: off)
    draft_model: str | None = None  # LLM: a small draft model directory (default: prompt lookup)
    host: str = "127.0.0.1"
    port: int = 8000
    max_beam_width: int = 512
    max_batch_rows: int = 2048
    max_batch_prompt_tokens: int = 32768
    max_batch_requests: int = 64
    max_queue_requests: int = 1024
    max_queue_rows: int = 131072
    target_step_ms: float | None = None  # cut GR batches to this estimated step time (None: budgets only)
    default_timeout_ms: int = 1000
    max_timeout_ms: int = 60000
    history_overflow: str = "truncate"  # or "reject": a history longer than the model's context
    max_body_bytes: int = 1 << 20
    max_batch_items: int = 256  # histories in one /v1/recommend/batch call
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    drain_timeout_s: float = 30.0
    log_requests: bool = False  # one JSON line per request at INFO
    device: str = "cpu"
    overlap: bool | None = None  # prepare step i+1 while step i computes (None: on for accelerators, off on CPU)
    register: str | None = None  # etcd URL: register this instance there under a lease, with heartbeats
    role: str = "mixed"  # mixed | prefill | decode
    dynamic_pd: bool = False  # a prefill or decode instance switches role as the load between the pools shifts
    advertise: str | None = None  # the address routers use (default http://host:port)
    lease_ttl_s: int = 5
    heartbeat_s: float = 1.0
    gr_model: bool = True  # False when `model` names an LLM directory: only the OpenAI routes serve then

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
        if self.overlap and self.speculative_tokens:
            raise ValueError("overlap: the LLM engine cannot overlap steps while speculating (speculative_tokens)")
        self.engine_config()  # validates the engine's share

    def engine_config(self) -> EngineConfig:
        return EngineConfig(max_beam_width=self.max_beam_width, max_batch_rows=self.max_batch_rows,
                            max_batch_prompt_tokens=self.max_batch_prompt_tokens,
                            max_batch_requests=self.max_batch_requests, max_queue_requests=self.max_queue_requests,
                            max_queue_rows=self.max_queue_rows, target_step_ms=self.target_step_ms,
                            overlap=self.overlap, device=self.device)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> "ServerConfig":
        """Values from `path` (.toml, .yaml or .yml), then every override that is not None."""
        values: dict = {}
        if path:
            path = Path(path)
            text = path.read_text()
            values = tomllib.loads(text) if path.suffix == ".toml" else (yaml.safe_load(text) or {})
            if not isinstance(values, dict):
                raise ValueError(f"{path}: expected a table of settings")
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ValueError(f"{path}: unknown settings {unknown}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
