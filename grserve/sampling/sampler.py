"""Turning a batch of logits into next tokens, each row under its own `SamplingParams`.

Two steps, as vLLM: `apply_penalties` rewrites the logits from the request's tokens so far (repetition,
frequency, presence penalties; `min_tokens`), then `sample` picks a token per row: argmax for greedy rows,
otherwise temperature, top-k, top-p, min-p and a draw with the row's own generator. Plain torch, on
whatever device the logits live; the caller keeps each seeded request's generator across steps."""
from __future__ import annotations

import torch

from grserve.sampling.params import SamplingParams

TopLogprobs = list[list[tuple[int, float]]]  # per row: (token id, logprob), most likely first


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """The generator of a request with `seed` (None for unseeded requests, which share the default one).
    It must live on the logits' device and be kept with the request: its state carries over steps."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _token_counts(token_ids: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """[B, V] float: how often each token occurs in each row's list."""
    longest = max(map(len, token_ids), default=0)
    # Rows are padded with the id `vocab`, whose column is dropped: one scatter for the whole batch.
    padded = [tokens + [vocab] * (longest - len(tokens)) for tokens in token_ids]
    ids = torch.tensor(padded, dtype=torch.long, device=device).reshape(len(token_ids), longest)
    counts = torch.zeros(len(token_ids), vocab + 1, device=device)
    counts.scatter_add_(1, ids, torch.ones(ids.shape, device=device))
    return counts[:, :vocab]


def _column(values: list[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)[:, None]


class Sampler:
    def apply_penalties(self, logits: torch.Tensor, output_token_ids: list[list[int]],
                        prompt_token_ids: list[list[int]], params: list[SamplingParams],
                        eos_token_id: int | None = None) -> torch.Tensor:
        """logits [B, V] → penalised float32 logits [B, V] (a new tensor; the input is left alone).

        repetition_penalty (HF/vLLM): a token seen in the prompt or the output has a positive logit divided
        by it and a negative one multiplied, so > 1 always lowers it. frequency_penalty (OpenAI/vLLM) is
        subtracted once per occurrence in the output, presence_penalty once if the token occurs there at
        all; the prompt does not count for these two. While a row has fewer than `min_tokens` output
        tokens, its `stop_token_ids` and `eos_token_id` (unless `ignore_eos`, as then EOS does not stop)
        are masked to -inf."""
        logits = logits.float()
        batch, vocab = logits.shape
        device = logits.device
        if any(p.frequency_penalty or p.presence_penalty or p.repetition_penalty != 1 for p in params):
            counts = _token_counts(output_token_ids, vocab, device)
            in_output = counts > 0
            if any(p.repetition_penalty != 1 for p in params):
                seen = in_output | (_token_counts(prompt_token_ids, vocab, device) > 0)
                penalty = _column([p.repetition_penalty for p in params], device)
                penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
                logits = torch.where(seen, penalised, logits)
            logits = (logits - _column([p.frequency_penalty for p in params], device) * counts
                      - _column([p.presence_penalty for p in params], device) * in_output)
        rows: list[int] = []
        cols: list[int] = []
        for row, (p, output) in enumerate(zip(params, output_token_ids)):
            if len(output) < p.min_tokens:
                stops = set(p.stop_token_ids)
                if eos_token_id is not None and not p.ignore_eos:
                    stops.add(eos_token_id)
                rows += [row] * len(stops)
                cols += sorted(stops)
        if rows:
            index = (torch.tensor(rows, device=device), torch.tensor(cols, device=device))
            logits = logits.index_put(index, torch.tensor(float("-inf"), device=device))
        return logits

    def sample(self, logits: torch.Tensor, params: list[SamplingParams],
               generators: list[torch.Generator | None]) -> tuple[torch.Tensor, torch.Tensor, TopLogprobs]:
        """logits [B, V] (already penalised) → (tokens [B] long, logprob of each token [B] float32, the top
        `params.logprobs` (token, logprob) pairs per row; [] where logprobs is None or 0).

        The logprobs are those of the model's distribution after penalties but *before* temperature,
        top-k, top-p and min-p, i.e. log_softmax(logits), as vLLM returns by default: they describe the
        model, not the sampling settings, and are comparable across requests."""
        logits = logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
        sampled = [row for row, p in enumerate(params) if not p.greedy]
        if sampled:
            rows = torch.tensor(sampled, device=logits.device)
            probs = _filtered_probs(logits[rows], [params[row] for row in sampled])
            tokens[rows] = _draw(probs, [generators[row] for row in sampled])
        token_logprobs = logprobs.gather(1, tokens[:, None]).squeeze(1)
        return tokens, token_logprobs, _top_logprobs(logprobs, params)


def _filtered_probs(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """[R, V] logits → [R, V] probabilities after temperature, top-k, top-p and min-p (vLLM's order)."""
    rows, vocab = logits.shape
    device = logits.device
    logits = logits / _column([p.temperature for p in params], device)
    # Stable sort: among tied logits, which ones fall inside top-k must not depend on the batch.
    sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)
    rank = torch.arange(vocab, device=device)
    top_k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=device)
    drop = rank >= top_k[:, None]
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
    # Top-p keeps the smallest prefix whose mass reaches top_p: drop a token once the mass strictly before
    # it already does. The top token has nothing before it, so it always stays. top_p = 1 is skipped, as
    # rounding can push the mass before the last tokens to 1.
    top_p = _column([p.top_p for p in params], device)
    drop |= (probs.cumsum(dim=-1) - probs >= top_p) & (top_p < 1)
    # Min-p is relative to the top token; renormalising after top-k/top-p leaves that ratio unchanged.
    drop |= probs < _column([p.min_p for p in params], device) * probs[:, :1]
    drop = torch.zeros_like(drop).scatter(1, order, drop)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf")).softmax(dim=-1)


def _draw(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """One token per row. A seeded row is drawn alone with its own generator, so its token depends only
    on its own probabilities and generator state, never on what else is in the batch."""
    tokens = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    shared = [row for row, g in enumerate(generators) if g is None]
    if shared:
        rows = torch.tensor(shared, device=probs.device)
        tokens[rows] = torch.multinomial(probs[rows], 1).squeeze(1)
    for row, generator in enumerate(generators):
        if generator is not None:
            tokens[row] = torch.multinomial(probs[row], 1, generator=generator)[0]
    return tokens


def _top_logprobs(logprobs: torch.Tensor, params: list[SamplingParams]) -> TopLogprobs:
    wanted = [p.logprobs or 0 for p in params]
    k = min(max(wanted, default=0), logprobs.shape[1])
    if k == 0:
        return [[] for _ in params]
    values, ids = logprobs.topk(k, dim=-1)  # one top-k and one transfer for the batch; sorted descending
    values, ids = values.tolist(), ids.tolist()
    return [list(zip(ids[row][:n], values[row][:n])) for row, n in enumerate(wanted)]
