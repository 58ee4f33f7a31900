"""Beam search for text (`use_beam_search`), on the separated-KV machinery of the GR path: the prompt is
prefilled once and its KV shared by every beam; each beam's generated tokens live in the unshared buffer,
reordered by parent index after each step. Runs a request to completion in one engine step.

Scoring as vLLM and HF: a hypothesis' score is its summed log-probability divided by
`generated_length ** length_penalty`; a beam that picks EOS is finished (unless `ignore_eos`), and the
search stops once `n` hypotheses are finished (early stopping) or after `max_tokens`."""
from __future__ import annotations

import torch

from grserve.kv.gr.separated_kv import SeparatedKVCache
from grserve.model.transformer import Transformer


@torch.no_grad()
def beam_search(model: Transformer, prompt: list[int], width: int, n: int, max_tokens: int, eos_token_id: int | None,
                ignore_eos: bool = False, length_penalty: float = 1.0) -> list[tuple[list[int], float, str]]:
    """The best `n` hypotheses: (generated tokens, score, finish reason), best first."""
    device = next(model.parameters()).device
    c = model.config
    P = len(prompt)
    logits, shared = model(torch.tensor([prompt], device=device), torch.arange(P, device=device)[None])
    kv = SeparatedKVCache(c.num_hidden_layers, c.num_key_value_heads, c.head_dim, width, max(max_tokens - 1, 1),
                          dtype=next(model.parameters()).dtype, device=device)
    kv.begin(shared, torch.ones(1, P, dtype=torch.bool, device=device), width)
    scores = torch.zeros(1, device=device)
    tokens = torch.zeros(1, 0, dtype=torch.long, device=device)
    logprobs = torch.log_softmax(logits[:, -1].float(), -1)
    finished: list[tuple[list[int], float, str]] = []
    for step in range(max_tokens):
        V = logprobs.shape[-1]
        cand = (scores[:, None] + logprobs).reshape(-1)
        top, index = cand.topk(min(2 * width, cand.numel()))
        parents, picks, keep = [], [], []
        for s, i in zip(top.tolist(), index.tolist()):
            parent, token = divmod(i, V)
            if token == eos_token_id and not ignore_eos:
                finished.append((tokens[parent].tolist(), s / max(step, 1) ** length_penalty, "stop"))
                continue
            parents.append(parent)
            picks.append(token)
            keep.append(s)
            if len(parents) == width:
                break
        if len(finished) >= n or not parents:
            return sorted(finished, key=lambda h: -h[1])[:n]
        if step == max_tokens - 1:
            break
        parent = torch.tensor(parents, device=device)
        tokens = torch.cat([tokens[parent], torch.tensor(picks, device=device)[:, None]], 1)
        scores = torch.tensor(keep, device=device)
        if step > 0:
            kv.reorder(torch.cat([parent, parent.new_zeros(width - len(parent))]))
        rows = torch.zeros(width, 1, dtype=torch.long, device=device)
        rows[:len(picks), 0] = torch.tensor(picks, device=device)
        logits, _ = model(rows, torch.full((width, 1), P + step, device=device), past=kv)
        logprobs = torch.log_softmax(logits[:len(picks), -1].float(), -1)
    # max_tokens reached: the live beams compete with the finished ones
    for parent, token, s in zip(parents, picks, keep):
        finished.append((tokens[parent].tolist() + [token], s / max_tokens ** length_penalty, "length"))
    return sorted(finished, key=lambda h: -h[1])[:n]
