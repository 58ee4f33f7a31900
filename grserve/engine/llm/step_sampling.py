"""What one LLM step samples, on the compute thread, and the drafts the host proposes after it: greedy
sequences with a draft keep its verified part, every other ready sequence is sampled in one batch with its
penalties, and a sequence that may speculate gets its next draft."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from grserve.engine.llm.model_runner import PreparedStep
from grserve.engine.llm.sequence import Sequence
from grserve.engine.llm.speculative import accept_greedy, propose_ngram, propose_with_model
from grserve.sampling.sampler import Sampler


@dataclass
class StepResult:
    """What the compute thread hands back for one step: per ready sequence the tokens to append (more than one
    when a draft was accepted) with logprobs, and the last token per ready sequence as a tensor (the next
    step's placeholders); or the error that failed the step. `drafted`/`accepted`: draft tokens verified and
    kept, for the engine's counters."""

    tokens: list[list[int]] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tops: list = field(default_factory=list)
    sampled: torch.Tensor | None = None
    error: Exception | None = None
    drafted: int = 0
    accepted: int = 0


def sample_step(step: PreparedStep, logits: list[torch.Tensor], sampler: Sampler, requests: dict,
                eos_token_id: int | None) -> StepResult:
    """Samples each ready sequence of `step` from its logits; `requests` (by seq id) give the seeded
    generators of requests still open."""
    result = StepResult(tokens=[[] for _ in step.ready], logprobs=[0.0] * len(step.ready),
                        tops=[[] for _ in step.ready])
    plain = [i for i, draft in enumerate(step.drafts) if not draft]
    for i, draft in enumerate(step.drafts):
        if draft:
            accepted = accept_greedy(draft, logits[i].argmax(-1).tolist())
            result.drafted += len(draft)
            result.accepted += len(accepted) - 1
            result.tokens[i] = accepted
    if plain:
        seqs = [step.ready[i] for i in plain]
        reqs = [requests.get(s.seq_id) for s in seqs]
        params = [s.params for s in seqs]
        rows = sampler.apply_penalties(torch.cat([logits[i] for i in plain]), [s.output_token_ids for s in seqs],
                                       [s.prompt_token_ids for s in seqs], params, eos_token_id)
        gens = [r.generators[r.seqs.index(s)] if r else None for r, s in zip(reqs, seqs)]
        tokens, logprobs, tops = sampler.sample(rows, params, gens)
        for i, token, lp, top in zip(plain, tokens.tolist(), logprobs.tolist(), tops):
            result.tokens[i], result.logprobs[i], result.tops[i] = [token], lp, top
    result.sampled = torch.tensor([t[-1] for t in result.tokens], dtype=torch.long)
    return result


def speculable(seq: Sequence, k: int) -> bool:
    """Whether `seq` drafts `k` tokens: greedy-exact verification needs plain greedy sampling."""
    p = seq.params
    return (k > 0 and p.greedy and p.logprobs is None and not seq.in_prefill and p.repetition_penalty == 1
            and p.presence_penalty == 0 and p.frequency_penalty == 0)


def next_draft(seq: Sequence, k: int, draft_model, max_model_len: int) -> list[int]:
    """`seq`'s next draft: the draft model's (when there is one) or prompt lookup's, never past max_tokens
    or the context."""
    draft = (propose_with_model(draft_model, seq.token_ids, k) if draft_model is not None
             else propose_ngram(seq.token_ids, k))
    room = min(seq.params.max_tokens - len(seq.output_token_ids), max_model_len - seq.num_tokens) - 1
    return draft[:max(0, room)]
