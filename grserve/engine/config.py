"""Engine configuration: the GR engine's batch budgets and the switches that turn each xGR technique off for
ablation; the LLM engine's cache, batching and speculation settings."""
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


@dataclass
class LLMEngineConfig:
    block_size: int = 16  # tokens per KV block
    kv_cache_bytes: int = 256 << 20  # the paged KV cache's memory: it holds as many blocks as fit
    max_num_batched_tokens: int = 512  # tokens per step: decode rows and prefill chunks together
    max_num_seqs: int = 64  # sequences running at once
    chunked_prefill: bool = True  # off: a prompt is prefilled whole in one step
    prefix_caching: bool = True
    speculative_tokens: int = 0  # >0: speculate that many tokens for greedy sequences
    draft_model: str | None = None  # a small model (same vocabulary) drafting them; None: prompt lookup
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    dtype: str = "float32"
    device: str = "cpu"
    # Prepare step i+1 while step i computes. None: on for accelerators (where the host would otherwise leave
    # the device idle), off on the CPU, where host and compute share the cores (see benchmarks/README.md).
    overlap: bool | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.overlap and self.speculative_tokens:
            raise ValueError("overlap: speculative decoding needs each step's result before the next is scheduled; "
                             "turn one of them off")
        if self.overlap is None:
            self.overlap = self.device != "cpu" and not self.speculative_tokens
