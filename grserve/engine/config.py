"""Engine configuration: the GR engine's batch budgets and the switches that turn each xGR technique off for
ablation; the LLM engine's cache, batching and speculation settings. Each field carries its one-line help."""
from __future__ import annotations

from dataclasses import dataclass, field

from grserve.model.precision import DTYPES
from grserve.model.quantized import QUANTIZATIONS


def setting(default, help: str):
    """A config field with its one-line help (what `grserve serve --help` and `grserve train --help` show)."""
    return field(default=default, metadata={"help": help})


DEVICE_HELP = "torch device: cpu, cuda or cuda:N"
# Overlap's default: on for accelerators, where the host would otherwise leave the device idle; off on the CPU,
# where the preparing thread competes with the compute for the same cores (see benchmarks/README.md).
COMPILE_HELP = ("compile each decoder layer's dense work (norms, projections, RoPE, MLP) with torch.compile, "
                "warmed for every shape class at start (tens of seconds the first time, seconds once inductor's "
                "cache has it); the model runs eager where compiling fails")
QUANTIZATION_HELP = ("linear weights of the decoder layers: none (the dtype's) or int8 (int8 per output channel, "
                     "activations quantized per call: PyTorch's dynamic quantized linear; CPU, float32; answers "
                     "then depend slightly on what else is in their batch)")
PACKED_LINEARS_HELP = ("float32 linears on oneDNN's prepacked weights on the CPU (measured 1.19x a decode step on "
                      "AVX2); off: PyTorch's linear over input-major weights")
OVERLAP_HELP = ("prepare the next batch on a second thread while the current one computes; unset: on for "
                "accelerators, off on the CPU")


def check_quantization(quantization: str, compile: bool, dtype: str = "float32") -> None:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if quantization != "none" and (compile or dtype == "bfloat16"):
        raise ValueError(f"quantization: int8 takes float32 activations, without compile; got dtype {dtype}, "
                         f"compile {compile}")


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


@dataclass
class LLMEngineConfig:
    block_size: int = setting(16, "tokens per KV cache block of the LLM")
    kv_cache_bytes: int = setting(256 << 20, "memory of the LLM's paged KV cache in bytes: it holds as many blocks "
                                             "as fit")
    decode_mirror_bytes: int = setting(128 << 20, "memory for a dense copy of the decoding sequences' KV, which "
                                                  "decode attention reads in place instead of gathering it from the "
                                                  "blocks every step (0: off; a step that would need more gathers)")
    max_num_batched_tokens: int = setting(512, "tokens per LLM step: decode rows and prefill chunks together")
    max_num_seqs: int = setting(64, "LLM sequences running at once")
    chunked_prefill: bool = setting(True, "prefill long prompts in chunks beside decode rows (off: a prompt is "
                                          "prefilled whole in one step)")
    prefix_caching: bool = setting(True, "reuse the cached KV blocks of prompt prefixes already computed")
    speculative_tokens: int = setting(0, "tokens drafted per step for greedy sequences, verified in one forward "
                                         "(0: no speculation)")
    draft_model: str | None = setting(None, "directory of a small model with the same vocabulary that drafts them; "
                                            "unset: prompt lookup (n-gram)")
    max_model_len: int | None = setting(None, "longest prompt plus output in tokens; unset: the model's "
                                              "max_position_embeddings")
    dtype: str = setting("auto", "LLM weight and KV dtype: auto (a bf16 or fp16 checkpoint in bfloat16 where the CPU "
                                 "computes bf16 natively, else float32), float32 or bfloat16")
    device: str = setting("cpu", DEVICE_HELP)
    overlap: bool | None = setting(None, OVERLAP_HELP)
    compile: bool = setting(False, COMPILE_HELP)
    quantization: str = setting("none", QUANTIZATION_HELP)
    packed_linears: bool = setting(True, PACKED_LINEARS_HELP)

    def __post_init__(self) -> None:
        check_quantization(self.quantization, self.compile, self.dtype)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.overlap and self.speculative_tokens:
            raise ValueError("overlap: speculative decoding needs each step's result before the next is scheduled; "
                             "turn one of them off")
        if self.overlap is None:
            self.overlap = self.device != "cpu" and not self.speculative_tokens
