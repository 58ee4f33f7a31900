"""A dense copy of the decoding sequences' KV, one row per sequence, that grows by one token a step.

Paged attention on the CPU has no kernel that reads blocks in place: each decode step gathered every
sequence's whole context out of the paged store, in every layer (~0.5 ms a layer for 16 sequences of 300
tokens, a fifth of the step). A sequence that decodes step after step sees the same context plus one token,
so its KV is mirrored here once, when it starts decoding (or after anything else broke the run: a prefill
chunk, a draft, a preemption), and from then on only its new token is written; attention reads the mirror
in place. The paged store stays the truth (prefix caching, transfers and chunks read it); the mirror costs
memory beside it and is used only while it fits in `max_bytes`, else the step gathers as before.

`plan` runs on the host, a step ahead of the compute (overlap): it assigns rows and decides what to copy,
and `reserve`, `fill` and `write` carry that out on the compute thread, in step order."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class MirrorPlan:
    """One step's use of the mirror, in the order of the step's decode tokens."""

    rows: torch.Tensor  # [Nd] the row of each decode sequence
    positions: torch.Tensor  # [Nd] where its new token goes (its context length - 1)
    fill_rows: list[int]  # rows to copy from the paged store first (each layer, once the step wrote it) ...
    fill_lengths: list[int]  # ... their first positions, the context before the new token ...
    fill_slots: torch.Tensor  # ... from these paged slots, all rows' concatenated
    num_rows: int  # the step reads rows [0, num_rows)
    length: int  # ... and their first `length` positions
    sees: torch.Tensor  # [num_rows, 1, 1, length] which of them each row's query attends
    in_order: bool  # rows == arange(Nd): queries need no scatter
    capacity: tuple[int, int]  # rows and positions the mirror holds from this step on


class DecodeMirror:
    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device, max_bytes: int):
        self.shape, self.dtype, self.device, self.max_bytes = (num_layers, num_kv_heads, head_dim), dtype, device, max_bytes
        self.buf = torch.zeros((num_layers, 2, 0, num_kv_heads, 0, head_dim), dtype=dtype, device=device)
        # Host-side bookkeeping, as planned (a step ahead of `buf`): each decoding sequence's row, and the
        # positions that row holds once the planned steps ran.
        self.rows: dict[int, tuple[int, int]] = {}
        self.capacity = (0, 0)  # rows and positions of `buf` once the planned steps ran

    def _bytes(self, rows: int, length: int) -> int:
        layers, heads, dim = self.shape
        return layers * 2 * rows * heads * length * dim * self.buf.element_size()

    def plan(self, seq_ids: list[int], contexts: Sequence[Sequence[int]]) -> MirrorPlan | None:
        """The plan for a step whose decode sequences are `seq_ids`, with the paged slots of their contexts,
        new token included; None (and the mirror forgotten) where it would not fit in `max_bytes`."""
        decoding = set(seq_ids)
        self.rows = {seq: held for seq, held in self.rows.items() if seq in decoding}  # the others' rows are free
        used = {row for row, _ in self.rows.values()}
        rows, fills = [], []  # fills: (row, slots)
        for seq, context in zip(seq_ids, contexts):
            row, held = self.rows.get(seq, (None, None))
            if row is None:  # the lowest free row, so that the rows a step reads stay few
                row = next(r for r in range(len(used) + 1) if r not in used)
                used.add(row)
            if held != len(context) - 1:  # new here, or its KV moved on without the mirror
                fills.append((row, context[:-1]))
            self.rows[seq] = (row, len(context))
            rows.append(row)
        num_rows, length = max(rows) + 1, max(map(len, contexts))
        # Growing by doubling keeps reallocations to a few in a batch's life.
        held_rows, held_length = self.capacity
        capacity = (held_rows if num_rows <= held_rows else max(num_rows, 2 * held_rows),
                    held_length if length <= held_length else max(length, 2 * held_length, 64))
        if self._bytes(*capacity) > self.max_bytes:
            self.rows.clear()
            return None
        self.capacity = capacity
        lengths = torch.zeros(num_rows, dtype=torch.long)
        lengths[rows] = torch.tensor(list(map(len, contexts)))
        sees = (torch.arange(length) < lengths[:, None])[:, None, None]
        slots = torch.tensor([s for _, context in fills for s in context], dtype=torch.long, device=self.device)
        return MirrorPlan(torch.tensor(rows, device=self.device),
                          torch.tensor([len(c) - 1 for c in contexts], device=self.device),
                          [r for r, _ in fills], [len(c) for _, c in fills], slots, num_rows, length,
                          sees.to(self.device), rows == list(range(len(rows))), capacity)

    def reserve(self, plan: MirrorPlan) -> None:
        """Before the step's forward (compute thread): room for the rows and positions it reads."""
        rows, length = self.buf.shape[2], self.buf.shape[4]
        if plan.capacity != (rows, length):
            # Zeros, not empty: a row's masked tail is still multiplied by 0 in attention, and garbage may be NaN.
            grown = torch.zeros((*self.buf.shape[:2], plan.capacity[0], self.buf.shape[3], plan.capacity[1],
                                 self.buf.shape[5]), dtype=self.dtype, device=self.device)
            grown[:, :, :rows, :, :length] = self.buf
            self.buf = grown

    def fill(self, layer: int, plan: MirrorPlan, store: torch.Tensor) -> None:
        """The planned copies for `layer` from its paged `store` [2, slots, heads, dim], once the step has
        written its own KV there: a sequence's cached prefix may be filled by a sibling in this same step."""
        if not plan.fill_rows:
            return
        copied = store.index_select(1, plan.fill_slots).split(plan.fill_lengths, dim=1)
        for row, n, kv in zip(plan.fill_rows, plan.fill_lengths, copied):
            self.buf[layer, :, row, :, :n] = kv.transpose(1, 2)

    def write(self, layer: int, plan: MirrorPlan, k: torch.Tensor, v: torch.Tensor) -> None:
        """The decode tokens' new k, v [Nd, heads, dim] of `layer`, at their rows and positions."""
        self.buf[layer, 0, plan.rows, :, plan.positions] = k
        self.buf[layer, 1, plan.rows, :, plan.positions] = v

    def keys_values(self, layer: int, plan: MirrorPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """Views [num_rows, heads, length, dim] of `layer`'s keys and values, read in place."""
        kv = self.buf[layer, :, :plan.num_rows, :, :plan.length]
        return kv[0], kv[1]
