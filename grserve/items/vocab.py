"""The GR token vocabulary: a few special tokens, then one range of `codebook_size` codes per level.

Token of code `c` at level `l` is `num_special + l * codebook_size + c`, so a model's output row for a
level is a contiguous slice and a prompt is the flattened SIDs of the history after `<bos>`. `levels` is the
item table's (ItemTable.levels): the vocabulary has one range per code of a SID."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grserve.items.item_table import ItemTable

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
PAD, BOS, EOS = range(len(SPECIAL_TOKENS))


@dataclass(frozen=True)
class GRVocab:
    codebook_size: int
    levels: int

    @classmethod
    def of(cls, table: ItemTable) -> GRVocab:
        """The vocabulary of a model over `table`'s SIDs."""
        return cls(table.codebook_size, table.levels)

    @property
    def num_special(self) -> int:
        return len(SPECIAL_TOKENS)

    @property
    def size(self) -> int:
        return self.num_special + self.levels * self.codebook_size

    def offset(self, level: int) -> int:
        return self.num_special + level * self.codebook_size

    def tokens(self, codes: np.ndarray) -> np.ndarray:
        """Tokens of SID codes `[..., levels]`."""
        return np.asarray(codes, dtype=np.int64) + self.offset(0) + self.codebook_size * np.arange(self.levels)

    def prompt(self, codes: np.ndarray) -> list[int]:
        """`<bos>` then the tokens of each history item's SID, oldest first."""
        return [BOS, *self.tokens(np.asarray(codes).reshape(-1, self.levels)).reshape(-1).tolist()]

    def names(self) -> list[str]:
        """A printable name per token (`<a_12>` = level 0 code 12), e.g. for a word-level tokenizer."""
        return [*SPECIAL_TOKENS, *(f"<{chr(97 + l)}_{c}>" for l in range(self.levels)
                                    for c in range(self.codebook_size))]
