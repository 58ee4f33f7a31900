"""Reference constrained beam search: the slow, obviously correct oracle for every fast path.

At every step it runs the model over the whole sequence (prompt + generated tokens) of every beam: no
KV cache, no shared prompt, no batching tricks beyond stacking the equal-length beam rows. Each step
takes the log-softmax over the *full* vocabulary and only then restricts to the trie's valid children,
so an item's score is the sum of the log-probabilities of its SID's tokens (one per level, whatever the
depth) under the unconstrained model.
Ties are broken by the smaller code sequence, which makes the result deterministic.

Filters remove items (`exclude`, and everything outside `allow` when given); a prefix is a candidate only
while some item under it survives, and surviving items are what a SID expands to."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from grserve.items.trie import SIDTrie
from grserve.items.vocab import GRVocab


@dataclass(frozen=True)
class ScoredItem:
    item: int  # item row in the catalog
    semantic_id: tuple[int, ...]
    score: float


@torch.no_grad()
def reference_beam_search(model, prompt: list[int], beam_width: int, top_n: int, trie: SIDTrie,
                          vocab: GRVocab, exclude: set[int] = frozenset(),
                          allow: set[int] | None = None) -> list[ScoredItem]:
    """Top-`top_n` items (expanded from the best `beam_width` SIDs) for one prompt."""
    if vocab.levels != trie.levels:
        raise ValueError(f"a vocabulary of {vocab.levels} levels for a trie of {trie.levels}")
    device = next(model.parameters()).device
    filtered = bool(exclude) or allow is not None
    kept = (allow if allow is not None else set(trie.item_rows.tolist())) - set(exclude)
    open_prefixes = ({sid[:n] for sid in _sids_holding(trie, kept) for n in range(1, trie.levels + 1)}
                     if filtered else None)
    beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    for level in range(vocab.levels):
        rows = [prompt + [vocab.offset(l) + c for l, c in enumerate(prefix)] for prefix, _ in beams]
        ids = torch.tensor(rows, dtype=torch.long, device=device)
        positions = torch.arange(ids.shape[1], device=device).expand_as(ids)
        logits, _ = model(ids, positions)
        logprobs = torch.log_softmax(logits[:, -1].double(), dim=-1).cpu()
        candidates = []
        for (prefix, score), lp in zip(beams, logprobs):
            for code in trie.children(prefix).tolist():
                if open_prefixes is None or prefix + (code,) in open_prefixes:
                    candidates.append((prefix + (code,), score + lp[vocab.offset(level) + code].item()))
        candidates.sort(key=lambda c: (-c[1], c[0]))
        beams = candidates[:beam_width]
    items = [ScoredItem(item, prefix, score) for prefix, score in beams for item in trie.items_of(*prefix)
             if item in kept]
    return items[:top_n]


def _sids_holding(trie: SIDTrie, items: set[int]) -> list[tuple[int, ...]]:
    """Every valid SID with at least one of `items`, found by walking the trie level by level."""
    prefixes: list[tuple[int, ...]] = [()]
    for _ in range(trie.levels):
        prefixes = [p + (code,) for p in prefixes for code in trie.children(p).tolist()]
    return [sid for sid in prefixes if any(i in items for i in trie.items_of(*sid))]
