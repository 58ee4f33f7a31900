"""Candidate tables, built once per catalog version from the trie's CSR tables.

Beam state is a trie *node* per level: level 0 has the root; a level-l node (l >= 1) is a position in the
trie's `codes[l - 1]` (a valid prefix of l codes), and a leaf, a level-L node for SIDs of L codes, is a valid
SID. Node `n`'s children at level `l` are contiguous in the CSR arrays: the child node of slot `j` is simply
`base[n] + j`, for `j < degree[n]`, and its token is `child_tokens[base[n] + j]`. Selecting a child is then
index arithmetic.

A level keeps its children flat, not as a [nodes, max_degree] padded table: on a 1M-item catalog the padded
level-2 table had ~15M slots (130 MB) for ~1M children, and building it and passing it to the serving process
(catalog/process.py) was most of the cost of a new catalog version. A batch gathers the rows it needs from the
flat arrays instead, the same gather it made from the padded table."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from grserve.items.trie import SIDTrie
from grserve.items.vocab import GRVocab


@dataclass
class LevelTable:
    child_tokens: torch.Tensor  # [children] token of every child, node by node, ascending within a node
    base: torch.Tensor  # [nodes] child node of slot j is base + j
    degree: torch.Tensor  # [nodes]
    max_degree: int  # slots per row of `slots` (at least 1)
    pad_token: int  # the level's largest token: padding keeps a row of `tokens` sorted

    def slots(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[rows, max_degree] child node of every slot of `nodes`, and which slots hold a child. Slots past a
        node's degree name the next nodes' children (or past the end): only `valid` ones may be used."""
        slot = torch.arange(self.max_degree)
        return self.base[nodes][:, None] + slot, slot < self.degree[nodes][:, None]

    def tokens(self, children: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The token of each slot `slots` gave: its child's, or `pad_token` where there is none."""
        flat = self.child_tokens
        return torch.where(valid, torch.take(flat, children.clamp(max=len(flat) - 1)), self.pad_token)

    def token_of(self, children: torch.Tensor) -> torch.Tensor:
        """The tokens of child nodes (real ones)."""
        return self.child_tokens[children]


def _level(indptr: np.ndarray, codes: np.ndarray, offset: int, K: int) -> LevelTable:
    degree = np.diff(indptr)
    # Copies, not views of the trie's memory: sharing a tensor with another process (catalog/process.py)
    # moves its storage to shared memory and frees the old one, which a view would still point into.
    return LevelTable(torch.from_numpy(codes + offset), torch.from_numpy(indptr[:-1].copy()),
                      torch.from_numpy(degree), max(int(degree.max()) if len(degree) else 0, 1), offset + K - 1)


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
            levels.append(_level(indptr, codes.cpu().numpy(), vocab.offset(level), K))
            degree = levels[-1].degree.numpy()
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
