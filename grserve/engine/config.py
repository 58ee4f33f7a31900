"""Engine configuration: batch budgets and the switches that turn each xGR technique off for ablation."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineConfig:
    max_beam_width: int = 512
    # A batch holds at most this many beam rows (requests x their padded beam width) ...
    max_batch_rows: int = 2048
    # ... and at most this many prompt tokens (requests x their padded prompt length).
    max_batch_prompt_tokens: int = 32768
    max_batch_requests: int = 64
    # Latency target of one engine step: batches are cut so that their estimated time (learned from the
    # steps so far) stays under it, so a request waits at most about two steps. None: budgets only.
    target_step_ms: float | None = None
    # Offline work in a batch is limited to this share of target_step_ms beyond its online work, so online
    # requests arriving while it runs wait a short step: offline fills idle capacity and yields to online.
    offline_step_fraction: float = 0.25
    # Admission: beyond this many waiting requests, or waiting beam rows, submit raises EngineOverloaded.
    max_queue_requests: int = 1024
    max_queue_rows: int = 131072
    # Ablation switches: each one on is an xGR technique; off is what a generic LLM server does.
    separated_kv: bool = True  # off: the prompt KV is expanded to every beam row
    early_topk: bool = True  # off: one full top-k over all W x k candidates
    trie_candidates: bool = True  # off: a dense vocabulary mask per beam row
    # off: the next batch is prepared only after the current one finishes. Default: on for accelerators,
    # off on the CPU, where the preparing thread competes with the compute for the same cores (measured:
    # about 20% fewer requests/s with it on 2 cores).
    overlap: bool | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.overlap is None:
            self.overlap = self.device != "cpu"
        if self.target_step_ms is not None and not (isinstance(self.target_step_ms, (int, float))
                                                    and self.target_step_ms > 0):
            raise ValueError(f"target_step_ms must be a positive number of milliseconds, got {self.target_step_ms!r}")
        if not 0 < self.offline_step_fraction <= 1:
            raise ValueError(f"offline_step_fraction must be in (0, 1], got {self.offline_step_fraction}")
        for name in ("max_beam_width", "max_batch_rows", "max_batch_prompt_tokens", "max_batch_requests",
                     "max_queue_requests", "max_queue_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_batch_rows < self.max_beam_width:
            raise ValueError(f"max_batch_rows ({self.max_batch_rows}) must hold one request of "
                             f"max_beam_width ({self.max_beam_width})")
