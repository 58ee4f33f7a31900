"""Separated KV cache (xGR): the GR decode rounds' attention backend, with the prompt KV stored once per request.

Shared KV: the prefill's cache, per layer [R, n_kv, P, d] for R left-padded prompts, kept as given and read by
every beam of its request. Unshared KV: each beam row's decode tokens (at most `max_steps`: L - 1 for SIDs of L
levels), in a buffer preallocated once and reused across batches. A beam fork/retire gathers only the unshared KV
by parent row.
Per layer a request of prompt P and beam W holds P + steps*W tokens of KV, not W*P as the expanded cache does.

Rows are packed: each row is a live beam, at a slot of the R x width grid of (request, beam) given by `rows`
(request-major, row i at grid slot rows[i] = r * width + j), so a narrow request beside a wide one costs only its
own beams. Without `rows` every grid slot is a row (row = r * width + j).
"""

from __future__ import annotations

import torch

from grserve.model.transformer import KVCache
from grserve.ops.staged_attention import staged_attention


class SeparatedKVCache:
    """An `AttentionBackend` (pass as `past`) for the decode rounds of a batch; `begin` starts each batch."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, max_rows: int, max_steps: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        self.num_layers, self.num_kv_heads, self.head_dim = num_layers, num_kv_heads, head_dim
        self.max_rows, self.max_steps = max_rows, max_steps
        shape = (num_layers, 2, max_rows, num_kv_heads, max_steps, head_dim)
        self._unshared = torch.zeros(shape, dtype=dtype, device=device)
        # `reorder` gathers into this twin and then the two swap: no allocation per round, and no row is
        # overwritten while another row still has to read it (a parent may have several children).
        self._spare = torch.zeros_like(self._unshared)
        self.shared: KVCache = []
        self.valid = torch.zeros(0, 0, dtype=torch.bool, device=device)
        self.width = self.rows = self.step = 0
        self.grid: torch.Tensor | None = None  # grid slots of the packed rows (None: every slot a row)

    @staticmethod
    def request_kv_tokens(prompt_len: int, beam_width: int, steps: int) -> int:
        """Tokens of KV per layer that one request holds here: its prompt once, plus each beam's decode tokens."""
        return prompt_len + steps * beam_width

    def begin(self, shared: KVCache, valid: torch.Tensor, width: int, rows: torch.Tensor | None = None) -> None:
        """Start a batch: `shared` is the prefill cache of R prompts, `valid` [R, P] their real tokens, `width`
        the grid's beams per request and `rows` the grid slots of the packed rows (None: all R * width). The
        prompt KV is kept as given, never copied per beam. Each request needs a real prompt token (not checked
        here: that would wait for the device)."""
        R, P = valid.shape
        if len(shared) != self.num_layers:
            raise ValueError(f"shared: {len(shared)} layers, the cache was built for {self.num_layers}")
        expected = (R, self.num_kv_heads, P, self.head_dim)
        for k, v in shared:
            if k.shape != expected or v.shape != expected or k.dtype != self._unshared.dtype:
                raise ValueError(f"shared: expected {self._unshared.dtype} {list(expected)} per layer, "
                                 f"got {k.dtype} {list(k.shape)}")
        if valid.dtype != torch.bool:
            raise ValueError(f"valid: must be bool, got {valid.dtype}")
        if width < 1:
            raise ValueError(f"width: must be at least 1, got {width}")
        self.shared, self.valid, self.width, self.step = shared, valid, width, 0
        self._set_rows(R * width if rows is None else len(rows), rows)

    def _set_rows(self, count: int, rows: torch.Tensor | None) -> None:
        if count > self.max_rows:
            raise ValueError(f"rows: {count} beam rows exceed max_rows {self.max_rows}")
        self.rows, self.grid = count, rows

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One decode round of `layer`: q [rows, H, 1, d], k, v [rows, n_kv, 1, d] -> [rows, H, 1, d]."""
        if q.shape[0] != self.rows or q.shape[2] != 1:
            raise ValueError(f"q: expected [{self.rows}, H, 1, d] (one token per beam row), got {list(q.shape)}")
        if self.step >= self.max_steps:
            raise RuntimeError(f"all {self.max_steps} decode rounds are done; call begin for the next batch")
        slots = self._unshared[layer, :, :self.rows]
        slots[0, :, :, self.step] = k[:, :, 0]
        slots[1, :, :, self.step] = v[:, :, 0]
        k_s, v_s = self.shared[layer]
        out = staged_attention(q[:, :, 0], k_s, v_s, self.valid,
                               slots[0, :, :, :self.step + 1], slots[1, :, :, :self.step + 1], self.grid, self.width)
        # The model calls the layers in order, so the round is complete after the last one.
        if layer == self.num_layers - 1:
            self.step += 1
        return out.unsqueeze(2)

    def reorder(self, parent: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """New row i continues old row parent[i] (same request) and sits at grid slot rows[i] (None: all slots):
        one gather of the decode KV written so far."""
        count = self.rows if rows is None else len(rows)
        if parent.shape != (count,):
            raise ValueError(f"parent: expected [{count}], got {list(parent.shape)}")
        old = self.rows
        self._set_rows(count, rows)
        torch.index_select(self._unshared[:, :, :old, :, :self.step], 2, parent,
                           out=self._spare[:, :, :count, :, :self.step])
        self._unshared, self._spare = self._spare, self._unshared

    def unshared_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the decode KV written so far for `layer`: k, v [rows, n_kv, step, d]."""
        return self._unshared[layer, 0, :self.rows, :, :self.step], self._unshared[layer, 1, :self.rows, :, :self.step]

    def kv_tokens(self) -> dict[str, int]:
        """Tokens of KV per layer for the batch: real prompt tokens once per request, and the beams' slots."""
        return {"shared": int(self.valid.sum()), "unshared": self.rows * self.max_steps}

    def kv_bytes(self) -> dict[str, int]:
        """Bytes of KV held for the batch, all layers: the prefill tensors (left padding included), and the
        buffer slots of the rows in use."""
        shared = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.shared)
        slot = self.num_kv_heads * self.head_dim * self._unshared.element_size()
        return {"shared": shared, "unshared": self.num_layers * 2 * self.rows * self.max_steps * slot}
