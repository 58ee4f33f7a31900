"""Tensors for one continuous-batching step: the scheduled sequences' new tokens (prefill chunks and
decode tokens side by side, packed into one row so that nothing is padded), their positions and KV slots,
one forward over the paged cache, and the logits at the last new token of every sequence ready to sample.

`prepare` (host) and `execute` (device) are separate so that the host prepares step i+1 while step i
computes: a decode token that step i is still sampling is a placeholder in step i+1's ids, filled on the
device from step i's sampled tokens just before the forward."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from grserve.engine.llm.sequence import Sequence
from grserve.kv.llm.block_manager import BlockManager
from grserve.kv.llm.paged_kv import AttentionMetadata, PagedKVCache
from grserve.model.transformer import Transformer


@dataclass
class PreparedStep:
    seqs: list[Sequence]
    num_tokens: list[int]  # tokens each sequence computes
    ids: list[int]  # packed new tokens; placeholders (0) where `fill_at` says
    positions: list[int]
    metadata: AttentionMetadata
    fill_at: list[int]  # packed index of each token the previous step is still sampling
    fill_from: list[int]  # ... and its row among that step's sampled tokens
    ready: list[Sequence]  # the sequences whose computed tokens reach their end: they sample after this step
    drafts: list[list[int]]  # per ready sequence, the speculative draft this step verifies
    ends: list[int]  # per ready sequence, the packed index after its last new token


class LLMModelRunner:
    def __init__(self, model: Transformer, blocks: BlockManager, device: str = "cpu", mirror_bytes: int = 0):
        c = model.config
        self.model, self.blocks, self.device = model, blocks, torch.device(device)
        self.kv = PagedKVCache(c.num_hidden_layers, blocks.num_blocks, blocks.block_size, c.num_key_value_heads,
                               c.head_dim, dtype=next(model.parameters()).dtype, device=self.device,
                               mirror_bytes=mirror_bytes)

    def prepare(self, seqs: list[Sequence], num_tokens: list[int], previous: PreparedStep | None) -> PreparedStep:
        """Lays out each sequence's next `num_tokens` tokens (its draft included) and advances its
        `num_computed_tokens`; a sequence that will sample gets one more `num_pending` token. `previous` is the
        step still in flight, whose sampled tokens fill this step's placeholders."""
        ids, positions, slots, owner, contexts = [], [], [], [], []
        fill_at, fill_from, ready, drafts, ends = [], [], [], [], []
        sampled_row = {s.seq_id: i for i, s in enumerate(previous.ready)} if previous else {}
        for i, (seq, n) in enumerate(zip(seqs, num_tokens)):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            known = (seq.token_ids + seq.draft)[start:end]
            if len(known) < n:  # the one token still being sampled: only ever the last of a decode row
                fill_at.append(len(ids) + len(known))
                fill_from.append(sampled_row[seq.seq_id])
            ids += known + [0] * (n - len(known))
            positions += range(start, end)
            slots += self.blocks.slot_mapping(seq.block_table, start, end)
            owner += [i] * n
            contexts.append(self.blocks.context_slots(seq.block_table, end))
            seq.num_computed_tokens = end
            if end == seq.num_tokens + seq.num_pending + len(seq.draft):
                ready.append(seq)
                drafts.append(list(seq.draft))
                ends.append(len(ids))
                seq.num_pending += 1
        return PreparedStep(seqs, num_tokens, ids, positions, self.kv.plan(slots, owner, positions, contexts,
                                                                     [s.seq_id for s in seqs]),
                            fill_at, fill_from, ready, drafts, ends)

    @torch.no_grad()
    def execute(self, step: PreparedStep, previous_sampled: torch.Tensor | None) -> list[torch.Tensor]:
        """One forward; per ready sequence, the logits [1 + len(draft), V] of its last 1 + len(draft)
        positions (float32, CPU). `previous_sampled`: the previous step's sampled token per ready sequence."""
        ids = torch.tensor([step.ids], device=self.device)
        if step.fill_at:
            ids[0, step.fill_at] = previous_sampled[step.fill_from].to(self.device)
        self.kv.use(step.metadata)
        hidden, _ = self.model.model(ids, torch.tensor([step.positions], device=self.device), None, self.kv)
        if not step.ready:
            return []
        rows = [hidden[0, end - 1 - len(draft):end] for end, draft in zip(step.ends, step.drafts)]
        logits = self.model.lm_head(torch.cat(rows)).float().cpu()
        return list(logits.split([len(r) for r in rows]))
