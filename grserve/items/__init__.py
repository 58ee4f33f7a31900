"""Item space: semantic IDs, the item table and its files, and the SID trie for constrained decoding."""

from grserve.items.item_table import ItemTable
from grserve.items.semantic_ids import residual_kmeans
from grserve.items.trie import SIDTrie

__all__ = ["ItemTable", "SIDTrie", "residual_kmeans"]
