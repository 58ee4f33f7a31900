"""Paged KV cache (LLM path): one preallocated store of fixed-size blocks shared by all sequences, and the
attention backend that reads each sequence's KV from the slots its block table names.

Storage is [num_layers, 2 (k, v), num_blocks * block_size, num_kv_heads, head_dim], indexed by flat slot
`block_id * block_size + offset` (`BlockManager.slot_mapping`). A step's new tokens of all sequences are packed
into one row [1, T] (a decode token costs one token, however long the prefill chunks beside it). `plan` turns
the step's slots and positions into an `AttentionMetadata`, a value of its own, so that the host can plan step
i+1 while step i computes (overlap); `use` makes it current, and the model then calls `attend` once per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AttentionMetadata:
    """One step's layout: where each new token's KV goes, and what each sequence's queries see. Decode
    sequences (one new token) attend together, each row over its own padded context; each prefill chunk
    attends on its own, causally over its context."""

    new_slots: torch.Tensor  # [T] flat slot of each packed new token
    decode_rows: torch.Tensor  # [Nd] packed index of each decode token
    decode_context: torch.Tensor  # [Nd, S] context slots of each decode sequence (padding: slot 0)
    decode_sees: torch.Tensor  # [Nd, 1, 1, S] which context entries are real
    chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # per chunk: rows [n], context [S], sees [n, S]


class PagedKVCache:
    """An `AttentionBackend` (pass as `past`) over paged KV storage; `use` a step's metadata before its forward."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        self.num_layers, self.num_blocks, self.block_size = num_layers, num_blocks, block_size
        self.kv = torch.zeros((num_layers, 2, num_blocks * block_size, num_kv_heads, head_dim),
                              dtype=dtype, device=device)
        self.metadata: AttentionMetadata | None = None

    def plan(self, slots: list[int], sequence_of_token: list[int], positions: list[int],
             context_slots: list[list[int]]) -> AttentionMetadata:
        """The layout of one step whose new tokens are packed into one row: token t belongs to sequence
        `sequence_of_token[t]` (its tokens contiguous), sits at absolute position `positions[t]` and stores its
        KV in `slots[t]`; `context_slots[s]` are the slots of all of sequence s's tokens up to and including the
        new ones, in position order. Touches no cache state."""
        device = self.kv.device
        first = {s: t for t, s in reversed(list(enumerate(sequence_of_token)))}
        counts = {s: sequence_of_token.count(s) for s in first}
        decode = [first[s] for s in sorted(first) if counts[s] == 1]
        contexts = [context_slots[sequence_of_token[t]] for t in decode]
        S = max(map(len, contexts), default=0)
        decode_context = torch.tensor([c + [0] * (S - len(c)) for c in contexts], dtype=torch.long,
                                      device=device).reshape(len(decode), S)
        lengths = torch.tensor([len(c) for c in contexts], device=device)
        chunks = []
        for s in sorted(first):
            if counts[s] > 1:
                context = torch.tensor(context_slots[s], dtype=torch.long, device=device)
                pos = torch.tensor(positions[first[s]:first[s] + counts[s]], device=device)
                # Context entry j is the token at position j: a query at position p sees j <= p.
                sees = torch.arange(len(context), device=device)[None] <= pos[:, None]
                chunks.append((torch.arange(first[s], first[s] + counts[s], device=device), context, sees))
        return AttentionMetadata(torch.tensor(slots, dtype=torch.long, device=device),
                                 torch.tensor(decode, dtype=torch.long, device=device), decode_context,
                                 (torch.arange(S, device=device) < lengths[:, None])[:, None, None], chunks)

    def use(self, metadata: AttentionMetadata) -> None:
        self.metadata = metadata

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store the new tokens' k, v [1, n_kv, T, d] of `layer` in their slots, and return the causal attention
        [1, H, T, d] of q [1, H, T, d] over each sequence's context."""
        m = self.metadata
        if m is None or q.shape[0] != 1 or q.shape[2] != len(m.new_slots):
            raise ValueError(f"q: expected [1, H, {0 if m is None else len(m.new_slots)}, d] as planned, "
                             f"got {list(q.shape)}")
        store = self.kv[layer]
        # Every write before any read: a sequence may reuse blocks that another one fills in this same step.
        store[0].index_copy_(0, m.new_slots, k[0].transpose(0, 1))
        store[1].index_copy_(0, m.new_slots, v[0].transpose(0, 1))
        out = torch.empty_like(q)
        if len(m.decode_rows):
            # index_select, not store[:, slots]: the same gather, measured 4x faster on the CPU
            context = store.index_select(1, m.decode_context.view(-1))
            keys, values = context.view(2, *m.decode_context.shape, *store.shape[2:]).permute(0, 1, 3, 2, 4)
            queries = q[0, :, m.decode_rows].transpose(0, 1)[:, :, None]  # [Nd, H, 1, d]
            attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=m.decode_sees,
                                                      enable_gqa=True)
            out[0, :, m.decode_rows] = attended[:, :, 0].transpose(0, 1)
        for rows, context, sees in m.chunks:
            keys, values = store.index_select(1, context).transpose(1, 2)  # [2, n_kv, S, d]
            attended = F.scaled_dot_product_attention(q[:, :, rows], keys[None], values[None], attn_mask=sees,
                                                      enable_gqa=True)
            out[0, :, rows] = attended[0]
        return out

    def kv_bytes(self) -> int:
        """Bytes of the KV storage, all blocks of all layers."""
        return self.kv.numel() * self.kv.element_size()
