"""Expanded KV cache: the GR decode rounds done the Hugging Face way, the ablation "separated KV off".

Every beam row holds its own copy of its request's prompt KV followed by its decode KV; each round concatenates
the new tokens and runs one SDPA, and a beam reorder copies the whole cache. Same answers as
`SeparatedKVCache` through the same interface, with W times the prompt KV memory and reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grserve.model.transformer import KVCache


class ExpandedKVCache:
    """An `AttentionBackend` (pass as `past`) for the decode rounds of a batch; `begin` starts each batch."""

    def __init__(self, num_layers: int, max_rows: int, max_steps: int):
        self.num_layers, self.max_rows, self.max_steps = num_layers, max_rows, max_steps
        self.kv: KVCache = []
        self.valid = torch.zeros(0, 0, dtype=torch.bool)
        self.width = self.rows = self.step = 0

    def begin(self, shared: KVCache, valid: torch.Tensor, width: int, rows: torch.Tensor | None = None) -> None:
        """Start a batch from the prefill cache of R prompts, `valid` [R, P]: each row gets its own copy of its
        request's prompt KV; rows are the grid slots `rows` (slot = r * width + j; None: all R * width)."""
        R = valid.shape[0]
        if len(shared) != self.num_layers:
            raise ValueError(f"shared: {len(shared)} layers, the cache was built for {self.num_layers}")
        request = torch.arange(R, device=valid.device).repeat_interleave(width) if rows is None else rows // width
        if width < 1 or len(request) > self.max_rows:
            raise ValueError(f"width: {len(request)} beam rows exceed max_rows {self.max_rows}")
        self.kv = [(k.index_select(0, request), v.index_select(0, request)) for k, v in shared]
        self.valid = valid.index_select(0, request)
        self.width, self.rows, self.step = width, len(request), 0

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One decode round of `layer`: q [rows, H, 1, d], k, v [rows, n_kv, 1, d] -> [rows, H, 1, d]."""
        if q.shape[0] != self.rows or q.shape[2] != 1:
            raise ValueError(f"q: expected [{self.rows}, H, 1, d] (one token per beam row), got {list(q.shape)}")
        if self.step >= self.max_steps:
            raise RuntimeError(f"all {self.max_steps} decode rounds are done; call begin for the next batch")
        past_k, past_v = self.kv[layer]
        k, v = torch.cat((past_k, k), dim=2), torch.cat((past_v, v), dim=2)
        self.kv[layer] = (k, v)
        decode = torch.ones(self.rows, self.step + 1, dtype=torch.bool, device=self.valid.device)
        mask = torch.cat((self.valid, decode), dim=1)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        if layer == self.num_layers - 1:
            self.step += 1
        return out

    def reorder(self, parent: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """New row i continues old row parent[i] (`rows`, their grid slots, change nothing here): the whole
        cache, prompt copies included, is gathered."""
        count = self.rows if rows is None else len(rows)
        if parent.shape != (count,):
            raise ValueError(f"parent: expected [{count}], got {list(parent.shape)}")
        self.kv = [(k.index_select(0, parent), v.index_select(0, parent)) for k, v in self.kv]
        self.valid = self.valid.index_select(0, parent)
        self.rows = count

    def kv_tokens(self) -> dict[str, int]:
        """Tokens of KV per layer for the batch: the real prompt tokens of every row, and the beams' decode slots."""
        return {"shared": int(self.valid.sum()), "unshared": self.rows * self.max_steps}

    def kv_bytes(self) -> dict[str, int]:
        """Bytes of KV for the batch, all layers: the prompt copies (left padding included), and the decode tokens
        of all `max_steps` rounds (as `SeparatedKVCache` counts its slots)."""
        shared = unshared = 0
        for k, v in self.kv:
            per_token = (k.numel() + v.numel()) * k.element_size() // k.shape[2]
            shared += per_token * self.valid.shape[1]
            unshared += per_token * self.max_steps
        return {"shared": shared, "unshared": unshared}
