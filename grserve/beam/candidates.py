"""Padded candidate tables, built once per engine from the trie's CSR tables.

Beam state is a trie *node* per level: level 0 has the root; a level-1 node is a position in
`first_codes` (a valid c0); a level-2 node is a position in `l1_codes` (a valid (c0, c1) pair); a leaf is
a position in `l2_codes` (a valid triple). Row `n` of level `l`'s table lists node `n`'s children: their
codes, their tokens (for gathering logits) and, since children are contiguous in the CSR arrays, the
child node of slot `j` is simply `base[n] + j`. Selecting a child is then index arithmetic."""
from __future__ import annotations

from dataclasses import dataclass

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


def _pad(starts: torch.Tensor, degree: torch.Tensor, values: torch.Tensor, offset: int, K: int) -> LevelTable:
    width = max(int(degree.max()) if len(degree) else 0, 1)
    slot = torch.arange(width)
    valid = slot[None] < degree[:, None]
    index = (starts[:, None] + slot[None]).clamp(max=max(len(values) - 1, 0))
    tokens = torch.where(valid, values[index] + offset, torch.tensor(offset + K - 1))
    return LevelTable(tokens, valid, starts.clone(), degree)


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
        K = trie.codebook_size
        first = trie.first_codes
        root = _pad(torch.zeros(1, dtype=torch.long), torch.tensor([len(first)]), first, vocab.offset(0), K)
        l1_start = trie.l1_indptr[first]
        level1 = _pad(l1_start, trie.l1_indptr[first + 1] - l1_start, trie.l1_codes, vocab.offset(1), K)
        # c0 of every (c0, c1) pair, then the CSR segment of its c2 children.
        pair_parent = torch.repeat_interleave(torch.arange(len(first)), level1.degree)
        pair_key = first[pair_parent] * K + trie.l1_codes
        l2_start = trie.l2_indptr[pair_key]
        level2 = _pad(l2_start, trie.l2_indptr[pair_key + 1] - l2_start, trie.l2_codes, vocab.offset(2), K)
        leaf_parent = torch.repeat_interleave(torch.arange(len(pair_key)), level2.degree)
        items_per_leaf = trie.item_indptr[1:] - trie.item_indptr[:-1]
        leaf_of_item = torch.empty(len(trie.item_rows), dtype=torch.long)
        leaf_of_item[trie.item_rows] = torch.repeat_interleave(torch.arange(len(items_per_leaf)), items_per_leaf)
        return cls([root, level1, level2], trie.item_indptr, trie.item_rows,
                   [torch.zeros(len(first), dtype=torch.long), pair_parent, leaf_parent], leaf_of_item)

    def items_of_leaf(self, leaf: int) -> list[int]:
        return self.item_rows[self.leaf_items_indptr[leaf]:self.leaf_items_indptr[leaf + 1]].tolist()

    def num_nodes(self, level: int) -> int:
        """Nodes that are children at `level` (level 0's children are level-1 nodes, ...)."""
        return len(self.parent_of[level])
