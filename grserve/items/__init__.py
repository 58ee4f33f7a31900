"""Item space: semantic IDs, the item table and its files, and the SID trie for constrained decoding."""

from grserve.items.codebooks import Codebooks
from grserve.items.item_table import ItemTable
from grserve.items.semantic_ids import residual_kmeans
from grserve.items.trie import SIDTrie

__all__ = ["Codebooks", "ItemTable", "SIDTrie", "residual_kmeans"]
