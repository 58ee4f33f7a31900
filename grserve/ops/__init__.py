"""Attention kernels in plain tensor code, below the model and the KV caches that call them."""

from grserve.ops.staged_attention import (expand_prompt_kv, expanded_attention, merge, shared_stage,
                                          staged_attention, unshared_stage)

__all__ = ["expand_prompt_kv", "expanded_attention", "merge", "shared_stage", "staged_attention", "unshared_stage"]
