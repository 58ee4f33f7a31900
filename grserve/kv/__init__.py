"""KV caches above the model: the GR decode rounds' separated (shared prompt + per-beam) cache, and the expanded
Hugging Face layout kept as its ablation."""

from grserve.kv.expanded_kv import ExpandedKVCache
from grserve.kv.separated_kv import SeparatedKVCache

__all__ = ["ExpandedKVCache", "SeparatedKVCache"]
