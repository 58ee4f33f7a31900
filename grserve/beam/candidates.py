"""Padded candidate tables, built once per catalog version from the trie's CSR tables.

Beam state is a trie *node* per level: level 0 has the root; a level-l node (l >= 1) is a position in the
trie's `codes[l - 1]` (a valid prefix of l codes), and a leaf, a level-L node for SIDs of L codes, is a valid
SID. Row `n` of level `l`'s table lists node `n`'s children: their codes, their tokens (for gathering logits)
and, since children are contiguous in the CSR arrays, the child node of slot `j` is simply `base[n] + j`.
Selecting a child is then index arithmetic."""
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
    levels: list[LevelTable]  # one per SID level: level l's table lists the children of level-l nodes
    leaf_items_indptr: torch.Tensor  # items of leaf f: item_rows[indptr[f]:indptr[f+1]]
    item_rows: torch.Tensor
    # Parent node of every node, per level (level-1 nodes → root 0, level-2 nodes → level-1 nodes, ..., leaves →
    # the level before), and the leaf of every item: what per-request item filters need to find the nodes they
    # empty.
    parent_of: list[torch.Tensor]
    leaf_of_item: torch.Tensor

    @classmethod
    def build(cls, trie: SIDTrie, vocab: GRVocab) -> "CandidateTables":
        # In numpy: a table is built once per catalog version, on a thread beside the engine's step thread,
        # where torch ops would start a second OpenMP team competing with the step's for the same cores.
        if vocab.levels != trie.levels:
            raise ValueError(f"a vocabulary of {vocab.levels} levels for a trie of {trie.levels}")
        K = trie.codebook_size
        levels, parent_of = [], []
        for level, (indptr, codes) in enumerate(zip(trie.indptr, trie.codes)):
            indptr = indptr.cpu().numpy()
            degree = np.diff(indptr)
            # A copy, not a view of the trie's memory: sharing a tensor with another process (catalog/process.py)
            # moves its storage to shared memory and frees the old one, which a view would still point into.
            levels.append(_pad(indptr[:-1].copy(), degree, codes.cpu().numpy(), vocab.offset(level), K))
            parent_of.append(np.repeat(np.arange(len(degree)), degree))
        item_indptr, item_rows = trie.item_indptr.cpu().numpy(), trie.item_rows.cpu().numpy()
        items_per_leaf = np.diff(item_indptr)
        leaf_of_item = np.empty(len(item_rows), dtype=np.int64)
        leaf_of_item[item_rows] = np.repeat(np.arange(len(items_per_leaf)), items_per_leaf)
        return cls(levels, trie.item_indptr, trie.item_rows, [torch.from_numpy(p) for p in parent_of],
                   torch.from_numpy(leaf_of_item))

    def items_of_leaf(self, leaf: int) -> list[int]:
        return self.item_rows[self.leaf_items_indptr[leaf]:self.leaf_items_indptr[leaf + 1]].tolist()

    def num_nodes(self, level: int) -> int:
        """Nodes that are children at `level` (level 0's children are level-1 nodes, ...)."""
        return len(self.parent_of[level])
