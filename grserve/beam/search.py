"""Batched constrained beam search over SID triples with a KV cache.

One prefill for a batch of left-padded prompts, then one decode forward per remaining level. The
prompt KV is expanded to every beam row (as HF transformers does); candidates at each level are only
the trie children of each beam's prefix, gathered from the CSR tables, and each request keeps the
`beam_width` best of its candidates. Scores are sums of full-vocabulary log-probabilities, the same
quantity as `grserve.reference`."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from grserve.items.trie import SIDTrie
from grserve.items.vocab import PAD, GRVocab


@dataclass
class Beams:
    """The surviving SID triples of one request, best first."""

    codes: torch.Tensor  # [n, levels] int64
    scores: torch.Tensor  # [n] float32


def _level_csr(trie: SIDTrie, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    if level == 0:
        return torch.tensor([0, len(trie.first_codes)]), trie.first_codes
    return (trie.l1_indptr, trie.l1_codes) if level == 1 else (trie.l2_indptr, trie.l2_codes)


def _prefix_ids(codes: torch.Tensor, K: int) -> torch.Tensor:
    """Row index into the level's indptr for each beam prefix (`c0`, or `c0*K + c1`)."""
    if codes.shape[1] == 0:
        return torch.zeros(codes.shape[0], dtype=torch.long)
    return codes[:, 0] if codes.shape[1] == 1 else codes[:, 0] * K + codes[:, 1]


def _select(logprobs, scores, codes, trie, vocab, level, num_requests, beam_width):
    """The best `beam_width` children per request: (parent rows, new codes, new scores)."""
    K, rows = vocab.codebook_size, logprobs.shape[0]
    width = rows // num_requests
    indptr, child_codes = _level_csr(trie, level)
    pid = _prefix_ids(codes, K)
    starts, counts = indptr[pid], indptr[pid + 1] - indptr[pid]
    row = torch.repeat_interleave(torch.arange(rows), counts)
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    code = child_codes[torch.arange(len(row)) - first + starts[row]]
    cand = scores[row] + logprobs[row, vocab.offset(level) + code]
    # Candidates of a request laid out as [beam, code]: a beam's children sit in its own K slots.
    table = torch.full((num_requests, width * K), float("-inf"))
    table[row // width, (row % width) * K + code] = cand
    best, col = table.topk(min(beam_width, width * K), dim=1)
    parent = (torch.arange(num_requests)[:, None] * width + col // K).reshape(-1)
    return parent, (col % K).reshape(-1), best.reshape(-1)


@torch.no_grad()
def beam_search(model, prompts: list[list[int]], beam_width: int, trie: SIDTrie,
                vocab: GRVocab) -> list[Beams]:
    device = next(model.parameters()).device
    B, P = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, P), PAD, dtype=torch.long)
    valid = torch.zeros(B, P, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p)
        valid[i, P - len(p):] = True
    lengths = valid.sum(1)
    positions = (valid.cumsum(1) - 1).clamp(min=0)
    # Pad queries attend to themselves only, so no softmax row is empty.
    causal = torch.ones(P, P, dtype=torch.bool).tril()
    mask = (causal & valid[:, None, :]) | torch.eye(P, dtype=torch.bool)
    logits, cache = model(ids.to(device), positions.to(device), mask[:, None].to(device))
    logprobs = torch.log_softmax(logits[:, -1].float(), -1).cpu()

    scores = torch.zeros(B)
    codes = torch.zeros(B, 0, dtype=torch.long)
    keys_valid, req_of_row = valid, torch.arange(B)
    for level in range(vocab.levels):
        if level > 0:
            step = torch.full((codes.shape[0], 1), vocab.offset(level - 1)) + codes[:, -1:]
            pos = lengths[req_of_row, None] + level - 1
            keys_valid = torch.cat([keys_valid, torch.ones(len(keys_valid), 1, dtype=torch.bool)], 1)
            logits, cache = model(step.to(device), pos.to(device), keys_valid[:, None, None].to(device),
                                  cache)
            logprobs = torch.log_softmax(logits[:, -1].float(), -1).cpu()
        parent, code, scores = _select(logprobs, scores, codes, trie, vocab, level, B, beam_width)
        codes = torch.cat([codes[parent], code[:, None]], 1)
        keys_valid, req_of_row = keys_valid[parent], req_of_row[parent]
        if level < vocab.levels - 1:
            index = parent.to(device)
            cache = [(k.index_select(0, index), v.index_select(0, index)) for k, v in cache]
    width = codes.shape[0] // B
    out = []
    for r in range(B):
        s, c = scores[r * width:(r + 1) * width], codes[r * width:(r + 1) * width]
        keep = torch.isfinite(s)
        out.append(Beams(c[keep], s[keep]))
    return out
