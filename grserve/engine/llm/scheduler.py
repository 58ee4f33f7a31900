"""Continuous batching with chunked prefill, for the LLM path (the GR path's strategy is fixed-step).

Every step has a token budget. Running sequences come first (a decode row costs one token; a sequence
still in prefill takes its next chunk), in priority order (online before offline, then arrival); then
waiting sequences are admitted while blocks and budget last, their prompts cut into chunks. When the
cache runs out of blocks, the lowest-priority, latest-arrived running sequence is preempted by
recompute: its blocks are freed and it waits again (its prompt blocks usually come back from the
prefix cache)."""
from __future__ import annotations

from dataclasses import dataclass

from grserve.engine.llm.sequence import Sequence, Status
from grserve.kv.llm.block_manager import BlockManager


@dataclass
class LLMSchedulerConfig:
    max_num_batched_tokens: int = 512
    max_num_seqs: int = 64
    chunked_prefill: bool = True  # off: a prompt is prefilled whole in one step (budget permitting)


@dataclass
class ScheduledStep:
    seqs: list[Sequence]
    num_tokens: list[int]  # tokens each sequence computes this step
    preempted: list[Sequence]


class LLMScheduler:
    def __init__(self, config: LLMSchedulerConfig, blocks: BlockManager):
        self.config, self.blocks = config, blocks
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _preempt(self, seq: Sequence) -> None:
        self.blocks.free(seq.block_table)
        seq.block_table, seq.num_computed_tokens, seq.status, seq.draft = [], 0, Status.WAITING, []
        self.running.remove(seq)
        self.waiting.append(seq)

    def schedule(self) -> ScheduledStep:
        budget = self.config.max_num_batched_tokens
        step = ScheduledStep([], [], [])
        self.running.sort(key=Sequence.order)
        for seq in list(self.running):
            if budget == 0 or seq not in self.running:
                continue
            if seq.num_pending and len(seq.output_token_ids) + seq.num_pending >= seq.params.max_tokens:
                continue  # the token in flight is its last: nothing more to compute
            # Tokens without KV: a prefill's rest, a decode token (perhaps still being sampled), a draft.
            todo = seq.num_tokens + seq.num_pending - seq.num_computed_tokens
            if seq.draft and todo + len(seq.draft) > budget:
                seq.draft = []  # no room to verify a draft this step: plain decode
            n = min(todo + len(seq.draft), budget)
            if not self.config.chunked_prefill and seq.in_prefill and n < seq.num_tokens - seq.num_computed_tokens:
                continue
            # Make room for the new tokens' KV, preempting from the back of the line if needed.
            while not self.blocks.can_append(seq.block_table, seq.num_computed_tokens + n):
                victim = self.running[-1]
                self._preempt(victim)
                step.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not Status.RUNNING:
                continue
            # Tokens not yet known (a draft, a token in flight) get slots but no hash until they are.
            known = seq.token_ids[:seq.num_computed_tokens + n]
            self.blocks.append_slot(seq.block_table, known, seq.num_computed_tokens + n - len(known))
            step.seqs.append(seq)
            step.num_tokens.append(n)
            budget -= n
        self.waiting.sort(key=Sequence.order)
        for seq in list(self.waiting):
            if budget == 0 or len(self.running) >= self.config.max_num_seqs:
                break
            if seq.cancelled:
                self.waiting.remove(seq)
                continue
            if seq.num_pending:
                continue  # preempted while its last token was in flight: admitted once that token lands
            if not self.blocks.can_allocate(seq.num_tokens):
                break
            if not self.config.chunked_prefill and seq.num_tokens > budget:
                break
            self.waiting.remove(seq)
            seq.block_table, cached = self.blocks.allocate(seq.token_ids)
            seq.num_computed_tokens = seq.num_cached_tokens = cached
            seq.status = Status.RUNNING
            self.running.append(seq)
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            # Registers the blocks this step fills, so a sibling admitted next (n > 1, a shared system
            # prompt) reuses them at once: the paged cache writes every new KV before anyone reads.
            self.blocks.append_slot(seq.block_table, seq.token_ids[:seq.num_computed_tokens + n])
            step.seqs.append(seq)
            step.num_tokens.append(n)
            budget -= n
        return step

    def finish(self, seq: Sequence, reason: str) -> None:
        seq.status, seq.finish_reason = Status.FINISHED, reason
        if seq in self.running:
            self.running.remove(seq)
            self.blocks.free(seq.block_table)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.block_table = []
