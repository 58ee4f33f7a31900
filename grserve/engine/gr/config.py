"""The GR engine's configuration: batch budgets, step targets, admission and queue limits, and the switches
that turn each xGR technique off for ablation. Each field carries its one-line help."""
from __future__ import annotations

from dataclasses import dataclass

from grserve.engine.config import (COMPILE_HELP, DEVICE_HELP, OVERLAP_HELP, QUANTIZATION_HELP, check_quantization,
                                   setting)


# A step of a third of the deadline leaves a request arriving during a full step its own step and as much
# again for queueing.
STEP_SHARE_OF_DEADLINE = 1 / 3


def step_target_ms(deadline_ms: float) -> float:
    """The step target that fits requests of this deadline (or latency SLO)."""
    return deadline_ms * STEP_SHARE_OF_DEADLINE


@dataclass
class EngineConfig:
    max_beam_width: int = setting(512, "widest beam a GR request may ask for (wider: 400)")
    max_batch_rows: int = setting(2048, "most beam rows in one GR batch: requests x their padded beam width")
    max_batch_prompt_tokens: int = setting(32768, "most prompt tokens in one GR batch: requests x their padded "
                                                  "prompt length")
    max_batch_requests: int = setting(64, "most requests in one GR batch")
    # A request waits for the step in flight, then its own: about two steps, plus queueing.
    target_step_ms: float | None = setting(None, "latency target of one GR engine step in ms: batches are cut so "
                                                 "that their time, estimated from the steps so far, stays under it "
                                                 "(and under the deadline of their most urgent request); unset: "
                                                 "grserve serve derives it from default_timeout_ms (step_target_ms)")
    # Offline fills idle capacity and yields to online: online requests arriving while it runs wait a short step.
    offline_step_fraction: float = setting(0.25, "share of target_step_ms that offline requests may add to a batch "
                                                 "beyond its online work")
    # Ablation switch for admission: off, every request the queue limits allow is admitted (and may then expire).
    admission_control: bool = setting(True, "refuse at once (429) a request the fitted step-cost model predicts "
                                            "would miss its deadline, and drop early (504) a waiting one that can "
                                            "no longer make it (off: admitted by queue length only)")
    max_queue_requests: int = setting(1024, "waiting GR requests beyond which new ones are refused (429)")
    max_queue_rows: int = setting(131072, "waiting GR beam rows beyond which new requests are refused (429)")
    # Ablation switches: each one on is an xGR technique; off is what a generic LLM server does.
    separated_kv: bool = setting(True, "store each request's prompt KV once, not per beam (off: copied per beam, "
                                       "for ablation)")
    early_topk: bool = setting(True, "early-terminated per-beam top-k before the global top-W (off: one full top-k "
                                     "over all W x k candidates)")
    trie_candidates: bool = setting(True, "gather logits at each beam's valid trie children only (off: a dense "
                                          "vocabulary mask per beam row)")
    overlap: bool | None = setting(None, OVERLAP_HELP)
    compile: bool = setting(False, COMPILE_HELP)
    quantization: str = setting("none", QUANTIZATION_HELP)
    device: str = setting("cpu", DEVICE_HELP)

    def __post_init__(self) -> None:
        check_quantization(self.quantization, self.compile)
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
