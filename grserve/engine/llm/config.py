"""The LLM engine's configuration: paged KV cache, batching, prefix caching, speculation, dtype and kernels.
Each field carries its one-line help."""
from __future__ import annotations

from dataclasses import dataclass

from grserve.engine.config import (COMPILE_HELP, DEVICE_HELP, OVERLAP_HELP, PACKED_LINEARS_HELP, QUANTIZATION_HELP,
                                   check_quantization, setting)
from grserve.model.precision import check_dtype


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
        check_dtype("dtype", self.dtype)
        if self.overlap and self.speculative_tokens:
            raise ValueError("overlap: speculative decoding needs each step's result before the next is scheduled; "
                             "turn one of them off")
        if self.overlap is None:
            self.overlap = self.device != "cpu" and not self.speculative_tokens
