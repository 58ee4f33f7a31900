"""Paged KV cache (LLM path): one preallocated store of fixed-size blocks shared by all sequences, and the
attention backend that reads each sequence's KV from the slots its block table names.

Storage is [num_layers, 2 (k, v), num_blocks * block_size, num_kv_heads, head_dim], indexed by flat slot
`block_id * block_size + offset` (`BlockManager.slot_mapping`). A step runs a batch of sequences, each adding
T_i new tokens (a prefill chunk, or one decode token) packed into padded [B, Tmax] rows: `prepare` takes the
step's slots and positions and builds, once per step, a padded [B, Smax] table of every sequence's context
slots with its causal mask; the model then calls `attend` once per layer, which gathers the whole batch's
context in one index and runs one attention over it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class PagedKVCache:
    """An `AttentionBackend` (pass as `past`) over paged KV storage; call `prepare` before each step's forward."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        self.num_layers, self.num_blocks, self.block_size = num_layers, num_blocks, block_size
        self.kv = torch.zeros((num_layers, 2, num_blocks * block_size, num_kv_heads, head_dim),
                              dtype=dtype, device=device)
        self._slot_mapping = torch.empty(0, 0, dtype=torch.long, device=device)
        self._is_new = self._slot_mapping >= 0
        self._new_slots = self._slot_mapping[self._is_new]
        # [B, Smax] context slots of each sequence (padding: slot 0) and [B, 1, Tmax, Smax] what each row sees.
        self._context = torch.zeros(0, 0, dtype=torch.long, device=device)
        self._sees = torch.zeros(0, 1, 0, 0, dtype=torch.bool, device=device)
        self._packed = False

    def prepare(self, slot_mapping: torch.Tensor, context_slots: list[torch.Tensor],
                new_positions: torch.Tensor) -> None:
        """Set up one step. slot_mapping [B, Tmax]: the flat slot of each new token, -1 for padding.
        context_slots: per sequence, the slots of all its tokens up to and including the new ones, in position
        order. new_positions [B, Tmax]: the absolute positions of the new tokens (any value for padding)."""
        if slot_mapping.dim() != 2 or slot_mapping.shape != new_positions.shape:
            raise ValueError(f"slot_mapping, new_positions: expected equal [B, Tmax] shapes, got "
                             f"{list(slot_mapping.shape)} and {list(new_positions.shape)}")
        if len(context_slots) != slot_mapping.shape[0]:
            raise ValueError(f"context_slots: {len(context_slots)} sequences for a batch of {slot_mapping.shape[0]}")
        device = self.kv.device
        self._slot_mapping = slot_mapping.to(device, torch.long)
        self._is_new = self._slot_mapping >= 0
        self._new_slots = self._slot_mapping[self._is_new]
        new_positions = new_positions.to(device)
        lengths = torch.tensor([len(c) for c in context_slots], device=device)
        S = int(lengths.max()) if len(context_slots) else 0
        self._context = torch.zeros(len(context_slots), S, dtype=torch.long, device=device)
        for i, context in enumerate(context_slots):
            self._context[i, :len(context)] = context.to(device, torch.long)
        # Context entry j is the token at position j, so causality is: a query at position p sees j <= p (and j
        # is a real entry). A padding row sees nothing and comes out as zeros.
        j = torch.arange(S, device=device)
        self._sees = ((j <= new_positions[:, :, None]) & (j < lengths[:, None, None]) & self._is_new[:, :, None])[:, None]
        self._packed = False

    def prepare_packed(self, slots: torch.Tensor, sequence_of_token: torch.Tensor, positions: torch.Tensor,
                       context_slots: list[torch.Tensor]) -> None:
        """Set up one step whose new tokens of all sequences are packed into a single row [1, T] (no padding:
        a decode token costs one token, however long the prefill chunks beside it). Token t belongs to sequence
        `sequence_of_token[t]` at absolute position `positions[t]`. Attention then runs in two parts: the
        single-token (decode) sequences together, each row over its own padded context; and each multi-token
        (prefill chunk) sequence on its own, causally over its context."""
        device = self.kv.device
        self._slot_mapping = slots.to(device, torch.long)[None]
        self._is_new = torch.ones_like(self._slot_mapping, dtype=torch.bool)
        self._new_slots = self._slot_mapping[0]
        seq, pos = sequence_of_token.tolist(), positions.to(device)
        first = {s: t for t, s in reversed(list(enumerate(seq)))}
        counts = {s: seq.count(s) for s in first}
        decode = [first[s] for s in sorted(first) if counts[s] == 1]
        self._decode_rows = torch.tensor(decode, dtype=torch.long, device=device)
        contexts = [context_slots[seq[t]].to(device, torch.long) for t in decode]
        S = max((len(c) for c in contexts), default=0)
        self._decode_context = torch.zeros(len(decode), S, dtype=torch.long, device=device)
        for i, c in enumerate(contexts):
            self._decode_context[i, :len(c)] = c
        lengths = torch.tensor([len(c) for c in contexts], device=device)
        self._decode_sees = (torch.arange(S, device=device) < lengths[:, None])[:, None, None]
        self._chunks = []
        for s in sorted(first):
            if counts[s] > 1:
                rows = torch.arange(first[s], first[s] + counts[s], device=device)
                context = context_slots[s].to(device, torch.long)
                sees = torch.arange(len(context), device=device)[None] <= pos[rows, None]
                self._chunks.append((rows, context, sees))
        self._packed = True

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store the new tokens' k, v [B, n_kv, Tmax, d] of `layer` in their slots, and return the causal attention
        [B, H, Tmax, d] of q [B, H, Tmax, d] over each sequence's context; padding rows are zeros."""
        B, H, T, d = q.shape
        if (B, T) != tuple(self._slot_mapping.shape):
            raise ValueError(f"q: expected [{', '.join(map(str, self._slot_mapping.shape))}] rows as prepared, "
                             f"got {list(q.shape)}")
        store = self.kv[layer]
        # Every write before any read: a sequence may reuse blocks that another one fills in this same step.
        store[0].index_copy_(0, self._new_slots, k.transpose(1, 2)[self._is_new])
        store[1].index_copy_(0, self._new_slots, v.transpose(1, 2)[self._is_new])
        if self._packed:
            return self._attend_packed(store, q)
        keys, values = store[:, self._context].permute(0, 1, 3, 2, 4)  # [2, B, n_kv, Smax, d]
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=self._sees, enable_gqa=True)
        return out.masked_fill(~self._is_new[:, None, :, None], 0.0)

    def _attend_packed(self, store: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(q)
        if len(self._decode_rows):
            keys, values = store[:, self._decode_context].permute(0, 1, 3, 2, 4)  # [2, Nd, n_kv, S, d]
            queries = q[0, :, self._decode_rows].transpose(0, 1)[:, :, None]  # [Nd, H, 1, d]
            attended = F.scaled_dot_product_attention(queries, keys, values, attn_mask=self._decode_sees,
                                                      enable_gqa=True)
            out[0, :, self._decode_rows] = attended[:, :, 0].transpose(0, 1)
        for rows, context, sees in self._chunks:
            keys, values = store[:, context].transpose(1, 2)  # [2, n_kv, S, d]
            attended = F.scaled_dot_product_attention(q[:, :, rows], keys[None], values[None], attn_mask=sees,
                                                      enable_gqa=True)
            out[0, :, rows] = attended[0]
        return out

    def kv_bytes(self) -> int:
        """Bytes of the KV storage, all blocks of all layers."""
        return self.kv.numel() * self.kv.element_size()
