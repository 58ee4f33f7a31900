"""Padded candidate tables, built once per catalog version from the trie's CSR tables.

Beam state is a trie *node* per level: level 0 has the root; a level-1 node is a position in
`first_codes` (a valid c0); a level-2 node is a position in `l1_codes` (a valid (c0, c1) pair); a leaf is
a position in `l2_codes` (a valid triple). Row `n` of level `l`'s table lists node `n`'s children: their
codes, their tokens (for gathering logits) and, since children are contiguous in the CSR arrays, the
child node of slot `j` is simply `base[n] + j`. Selecting a child is then index arithmetic."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from grserve.items.trie import SIDTrie
from grserve.items.vocab import GRVocab


@dataclass
class LevelTable:
    # [nodes, max_degree] token of each child, ascending; padded with the level's largest token so rows
    # stay sorted (the dense-mask ablation maps tokens back to slots by binary search).
    tokens: torch.Tensor
    valid: torch.Tensor  # [nodes, max_degree] bool
    base: torch.Tensor  # [nodes] child node of slot j is base + j
    degree: torch.Tensor  # [nodes]

    @property
    def max_degree(self) -> int:
        return self.tokens.shape[1]


def _pad(starts: np.ndarray, degree: np.ndarray, values: np.ndarray, offset: int, K: int) -> LevelTable:
    """Node n's children values[starts[n]:starts[n] + degree[n]], one row per node, padded. Only the real
    children are written (scattered into a table filled with the padding token): on a 1M-item catalog the
    padded level-2 table has ~14M slots and ~1M children."""
    nodes, width = len(degree), max(int(degree.max()) if len(degree) else 0, 1)
    row = np.repeat(np.arange(nodes), degree)
    slot = np.arange(len(row)) - np.repeat(np.cumsum(degree) - degree, degree)
    flat = row * width + slot
    tokens = np.full(nodes * width, offset + K - 1, dtype=np.int64)
    tokens[flat] = values[starts[row] + slot] + offset
    valid = np.zeros(nodes * width, dtype=bool)
    valid[flat] = True
    return LevelTable(torch.from_numpy(tokens.reshape(nodes, width)), torch.from_numpy(valid.reshape(nodes, width)),
                      torch.from_numpy(starts), torch.from_numpy(degree))


@dataclass
class CandidateTables:
    levels: list[LevelTable]
    leaf_items_indptr: torch.Tensor  # items of leaf f: item_rows[indptr[f]:indptr[f+1]]
    item_rows: torch.Tensor
    # Parent node of every node, per level (level 1 → root 0, level 2 → level-1 node, leaf → level-2 node),
    # and the leaf of every item: what per-request item filters need to find the nodes they empty.
    parent_of: list[torch.Tensor]
    leaf_of_item: torch.Tensor

    @classmethod
    def build(cls, trie: SIDTrie, vocab: GRVocab) -> "CandidateTables":
        # In numpy: a table is built once per catalog version, on a thread beside the engine's step thread,
        # where torch ops would start a second OpenMP team competing with the step's for the same cores.
        K = trie.codebook_size
        first, l1_indptr, l1_codes, l2_indptr, l2_codes, item_indptr, item_rows = (
            t.cpu().numpy() for t in (trie.first_codes, trie.l1_indptr, trie.l1_codes, trie.l2_indptr, trie.l2_codes,
                                      trie.item_indptr, trie.item_rows))
        root = _pad(np.zeros(1, dtype=np.int64), np.array([len(first)]), first, vocab.offset(0), K)
        l1_start = l1_indptr[first]
        level1 = _pad(l1_start, l1_indptr[first + 1] - l1_start, l1_codes, vocab.offset(1), K)
        # c0 of every (c0, c1) pair, then the CSR segment of its c2 children.
        pair_parent = np.repeat(np.arange(len(first)), level1.degree.numpy())
        pair_key = first[pair_parent] * K + l1_codes
        l2_start = l2_indptr[pair_key]
        level2 = _pad(l2_start, l2_indptr[pair_key + 1] - l2_start, l2_codes, vocab.offset(2), K)
        leaf_parent = np.repeat(np.arange(len(pair_key)), level2.degree.numpy())
        items_per_leaf = np.diff(item_indptr)
        leaf_of_item = np.empty(len(item_rows), dtype=np.int64)
        leaf_of_item[item_rows] = np.repeat(np.arange(len(items_per_leaf)), items_per_leaf)
        parent_of = [np.zeros(len(first), dtype=np.int64), pair_parent, leaf_parent]
        return cls([root, level1, level2], trie.item_indptr, trie.item_rows,
                   [torch.from_numpy(p) for p in parent_of], torch.from_numpy(leaf_of_item))

    def items_of_leaf(self, leaf: int) -> list[int]:
        return self.item_rows[self.leaf_items_indptr[leaf]:self.leaf_items_indptr[leaf + 1]].tolist()

    def num_nodes(self, level: int) -> int:
        """Nodes that are children at `level` (level 0's children are level-1 nodes, ...)."""
        return len(self.parent_of[level])
