"""Speculative decoding for greedy sequences: drafts from prompt lookup (n-gram) or a small draft model.

Prompt lookup is free: the k tokens that followed the most recent earlier occurrence of the sequence's last
n tokens (n from `max_ngram` down to 1). A draft model proposes its own greedy continuation. The target
model scores the last token and the draft in one forward; greedy verification keeps the draft up to its
first disagreement with the target's argmax and adds the target's own token there, so the output is
exactly what plain greedy decoding gives, whatever the draft."""
from __future__ import annotations

import torch


def propose_ngram(token_ids: list[int], k: int, max_ngram: int = 3) -> list[int]:
    for n in range(min(max_ngram, len(token_ids) - 1), 0, -1):
        tail = token_ids[-n:]
        # the most recent earlier match, whose continuation is nearest to what comes next
        for start in range(len(token_ids) - n - 1, -1, -1):
            if token_ids[start:start + n] == tail:
                return token_ids[start + n:start + n + k]
    return []


@torch.no_grad()
def propose_with_model(draft_model, token_ids: list[int], k: int, window: int = 256) -> list[int]:
    """The draft model's greedy continuation of the last `window` tokens, k tokens long. It recomputes its
    window each time (no cache of its own): a draft model is small, and this keeps it independent of the
    target's KV blocks. Positions are the tokens' true positions, so RoPE sees the same offsets."""
    start = max(0, len(token_ids) - window)
    ids = list(token_ids[start:])
    device = next(draft_model.parameters()).device
    for _ in range(k):
        positions = torch.arange(start, start + len(ids), device=device)[None]
        logits, _ = draft_model(torch.tensor([ids], device=device), positions)
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(ids) - k:]


def accept_greedy(draft: list[int], target: list[int]) -> list[int]:
    """`target[i]` is the target model's argmax after the last token and draft[:i]; returns the tokens
    greedy decoding would emit: the agreeing draft prefix, then the target's token where they part."""
    accepted = 0
    while accepted < len(draft) and draft[accepted] == target[accepted]:
        accepted += 1
    return draft[:accepted] + [target[accepted]]
