"""What an LLM request's sequences produce: each sampled token is checked against the stop conditions (EOS,
stop tokens, stop strings, max_tokens, the context) and turned into a detokenized delta; text that may still
grow into a stop string is held back until it cannot."""
from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Callable

import torch

from grserve.engine.llm.sequence import Sequence
from grserve.model.tokenizer import IncrementalDetokenizer


@dataclass
class CompletionDelta:
    """What one sequence produced since the last delta: new text and tokens; finish_reason when done."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list = field(default_factory=list)  # per token: (token, logprob, [(token, logprob), ...])
    finish_reason: str | None = None


@dataclass
class LLMRequest:
    request_id: str
    seqs: list[Sequence]
    emit: Callable[[object], None]  # called on the step thread with each CompletionDelta (or an exception)
    detokenizers: list[IncrementalDetokenizer]
    texts: list[str]  # per sequence: the text so far
    generators: list[torch.Generator | None]
    sent: list[int] = field(default_factory=list)  # per sequence: how much of `texts` was emitted
    outputs: queue.Queue | None = None  # where `emit` puts them when the caller reads synchronously


def next_delta(seq: Sequence, req: LLMRequest, token: int, logprob: float, top: list, eos_token_id: int | None,
               max_model_len: int) -> CompletionDelta:
    """Appends `token` to `seq` and returns what to emit for it; its finish_reason is set when `seq` ends."""
    p, index = seq.params, req.seqs.index(seq)
    seq.token_ids.append(token)
    reason = None
    if not p.ignore_eos and token == eos_token_id and len(seq.output_token_ids) > p.min_tokens:
        reason = "stop"
    elif token in p.stop_token_ids and len(seq.output_token_ids) > p.min_tokens:
        reason = "stop"
    elif len(seq.output_token_ids) >= p.max_tokens or seq.num_tokens >= max_model_len:
        reason = "length"
    stop_token = reason == "stop"
    visible = seq.output_token_ids[:-1] if stop_token else seq.output_token_ids
    req.texts[index] += req.detokenizers[index].delta(visible)
    full, sent = req.texts[index], req.sent[index]
    if p.stop:
        longest = max(len(x) for x in p.stop)
        hits = [h for h in (full.find(x, max(0, sent - longest)) for x in p.stop) if h >= 0]
        if hits:
            full = req.texts[index] = full[:min(hits)]
            stop_token = stop_token and reason == "stop"  # a stop token that also ends a stop string
            reason = "stop"
    # Text that may still grow into a stop string is held back until it cannot (or the sequence ends).
    held = max((len(x) for x in p.stop), default=1) - 1 if reason is None else 0
    end = max(sent, len(full) - held)
    text, req.sent[index] = full[sent:end], end
    emitted = [] if stop_token else [token]  # a stop token ends the output without being part of it
    lps = [(token, logprob, top)] if p.logprobs is not None and emitted else []
    return CompletionDelta(index, text, emitted, lps, reason)
