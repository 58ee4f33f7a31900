"""Tensors for one continuous-batching step: the scheduled sequences' new tokens (prefill chunks and
decode tokens side by side, packed into one row so that nothing is padded), their positions and KV slots,
one forward over the paged cache, and the logits at the last new token of every sequence ready to sample."""
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
        """Computes each sequence's next `num_tokens` tokens (its speculative draft included), all packed
        into one row; returns the sequences whose computed tokens now reach their end (they sample next)
        and, for each, the logits [1 + len(draft), V] of its last 1 + len(draft) positions (float32, CPU)."""
        ids, positions, slots, owner, context, ends = [], [], [], [], [], []
        for i, (seq, n) in enumerate(zip(seqs, num_tokens)):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            ids += (seq.token_ids + seq.draft)[start:end]
            positions += range(start, end)
            slots += self.blocks.slot_mapping(seq.block_table, start, end)
            owner += [i] * n
            context.append(torch.tensor(self.blocks.slot_mapping(seq.block_table, 0, end)))
            ends.append(len(ids))
        positions_t = torch.tensor(positions)
        self.kv.prepare_packed(torch.tensor(slots), torch.tensor(owner), positions_t, context)
        hidden, _ = self.model.model(torch.tensor([ids], device=self.device), positions_t[None].to(self.device),
                                     None, self.kv)
        ready = [i for i, (seq, n) in enumerate(zip(seqs, num_tokens))
                 if seq.num_computed_tokens + n == seq.num_tokens + len(seq.draft)]
        rows = [hidden[0, ends[i] - 1 - len(seqs[i].draft):ends[i]] for i in ready]
        logits = self.model.lm_head(torch.cat(rows)).float().cpu() if rows else None
        for seq, n in zip(seqs, num_tokens):
            seq.num_computed_tokens += n
        return [seqs[i] for i in ready], list(logits.split([len(r) for r in rows])) if rows else []
