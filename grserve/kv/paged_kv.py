"""Paged KV cache (LLM path): one preallocated store of fixed-size blocks shared by all sequences, and the
attention backend that reads each sequence's KV from the slots its block table names.

Storage is [num_layers, 2 (k, v), num_blocks * block_size, num_kv_heads, head_dim], indexed by flat slot
`block_id * block_size + offset` (`BlockManager.slot_mapping`). A step runs a batch of sequences, each adding
T_i new tokens (a prefill chunk, or one decode token) packed into padded [B, Tmax] rows: `prepare` takes the
step's slots and positions, then the model calls `attend` once per layer. A plain loop over the sequences: the
oracle a fused paged-attention kernel will be tested against.
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
        # Per sequence of the step: its new tokens' rows, all its context slots, and which of them each row sees.
        self._sequences: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

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
        self._sequences = []
        for i, context in enumerate(context_slots):
            rows = self._is_new[i].nonzero().squeeze(1)
            # Context entry j is the token at position j, so causality is: a query at position p sees j <= p.
            sees = torch.arange(len(context), device=device) <= new_positions[i, rows, None]
            self._sequences.append((rows, context.to(device, torch.long), sees))

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
        out = q.new_zeros(B, H, T, d)
        for i, (rows, context, sees) in enumerate(self._sequences):
            keys, values = store[:, context].transpose(1, 2)  # [2, n_kv, S, d]
            queries = q[i].index_select(1, rows)
            attended = F.scaled_dot_product_attention(queries[None], keys[None], values[None], attn_mask=sees,
                                                      enable_gqa=True)
            out[i].index_copy_(1, rows, attended[0])
        return out

    def kv_bytes(self) -> int:
        """Bytes of the KV storage, all blocks of all layers."""
        return self.kv.numel() * self.kv.element_size()
