"""Tensors for one continuous-batching step: the scheduled sequences' new tokens (prefill chunks and
decode tokens side by side), their positions and KV slots, one forward over the paged cache, and the
logits at the last new token of every sequence that is ready to sample."""
from __future__ import annotations

import torch

from grserve.engine.sequence import Sequence
from grserve.kv.block_manager import BlockManager
from grserve.kv.paged_kv import PagedKVCache
from grserve.model.transformer import Transformer


class LLMModelRunner:
    def __init__(self, model: Transformer, blocks: BlockManager, device: str = "cpu"):
        c = model.config
        self.model, self.blocks, self.device = model, blocks, torch.device(device)
        self.kv = PagedKVCache(c.num_hidden_layers, blocks.num_blocks, blocks.block_size, c.num_key_value_heads,
                               c.head_dim, dtype=next(model.parameters()).dtype, device=self.device)

    @torch.no_grad()
    def run(self, seqs: list[Sequence], num_tokens: list[int]) -> tuple[list[Sequence], list[torch.Tensor]]:
        """Computes each sequence's next `num_tokens` tokens (its speculative draft included); returns the
        sequences whose computed tokens now reach their end (they sample next) and, for each, the logits
        [1 + len(draft), V] of its last 1 + len(draft) positions (float32, on the CPU)."""
        B, T = len(seqs), max(num_tokens)
        ids = torch.zeros(B, T, dtype=torch.long)
        positions = torch.zeros(B, T, dtype=torch.long)
        slots = torch.full((B, T), -1, dtype=torch.long)
        context = []
        for b, (seq, n) in enumerate(zip(seqs, num_tokens)):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            ids[b, :n] = torch.tensor((seq.token_ids + seq.draft)[start:end])
            positions[b, :n] = torch.arange(start, end)
            slots[b, :n] = torch.tensor(self.blocks.slot_mapping(seq.block_table, start, end))
            context.append(torch.tensor(self.blocks.slot_mapping(seq.block_table, 0, end), device=self.device))
        self.kv.prepare(slots.to(self.device), context, positions.to(self.device))
        hidden, _ = self.model.model(ids.to(self.device), positions.to(self.device), None, self.kv)
        ready = [b for b, (seq, n) in enumerate(zip(seqs, num_tokens))
                 if seq.num_computed_tokens + n == seq.num_tokens + len(seq.draft)]
        rows = [hidden[b, num_tokens[b] - 1 - len(seqs[b].draft):num_tokens[b]] for b in ready]
        logits = self.model.lm_head(torch.cat(rows)).float().cpu() if rows else None
        for seq, n in zip(seqs, num_tokens):
            seq.num_computed_tokens += n
        sizes = [len(r) for r in rows]
        return [seqs[b] for b in ready], list(logits.split(sizes)) if rows else []
