"""Paged KV cache (LLM path): one preallocated store of fixed-size blocks shared by all sequences, and the
attention backend that reads each sequence's KV from the slots its block table names.

Storage is [num_layers, 2 (k, v), num_blocks * block_size, num_kv_heads, head_dim], indexed by flat slot
`block_id * block_size + offset` (`BlockManager.slot_mapping`). A step's new tokens of all sequences are packed
into one row [1, T] (a decode token costs one token, however long the prefill chunks beside it). `plan` turns
the step's slots and positions into an `AttentionMetadata`, a value of its own, so that the host can plan step
i+1 while step i computes (overlap); `use` makes it current, and the model then calls `attend` once per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from grserve.kv.llm.decode_mirror import DecodeMirror, MirrorPlan


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
    # Chunks with no past (a whole prompt, nothing cached) attend causally over their own new keys, without
    # a gather or a mask, those of one length in one call: packed indices [G, n] per length.
    fresh: list[torch.Tensor]
    mirror: MirrorPlan | None = None  # where decode reads its keys in place (None: it gathers them)
    # Every new token is a decode token, in packed order: a decode-only step reads q, k, v as views, where
    # indexing them by `decode_rows` cost ~0.3 ms a layer on the 16x1024 bench model in bf16 (paired, 1.03-1.05x
    # its tokens/s; the 8x512 one unchanged: `benchmarks/results/llm-decode-views-20261207.json`).
    decode_only: bool = False

    def decode_part(self, x: torch.Tensor) -> torch.Tensor:
        """The decode tokens' entries [n, Nd, d] of x [1, n, T, d] (q, k or v of the step)."""
        return x[0] if self.decode_only else x[0, :, self.decode_rows]


def decode_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                      sees: torch.Tensor) -> torch.Tensor:
    """One query per row: [N, H, d] over keys, values [N, n_kv, S, d] where `sees` [N, 1, 1, S]. Each KV head's
    query heads (HF's grouping: head h reads KV head h // (H / n_kv)) go in as that head's query rows, so SDPA
    reads each key once instead of expanding the keys to H heads (`grserve bench llm-kernels`: with the mirror,
    0.27 against 1.04 ms a layer for 16 rows of 320 keys)."""
    n, heads, dim = queries.shape
    grouped = queries.reshape(n, keys.shape[1], heads // keys.shape[1], dim)
    return F.scaled_dot_product_attention(grouped, keys, values, attn_mask=sees).reshape(n, heads, dim)


class PagedKVCache:
    """An `AttentionBackend` (pass as `past`) over paged KV storage; `use` a step's metadata before its forward.
    With `mirror_bytes`, decoding sequences also keep a dense copy of their KV (`DecodeMirror`) of at most
    that size, which decode attention reads in place."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", mirror_bytes: int = 0):
        self.num_layers, self.num_blocks, self.block_size = num_layers, num_blocks, block_size
        self.kv = torch.zeros((num_layers, 2, num_blocks * block_size, num_kv_heads, head_dim),
                              dtype=dtype, device=device)
        self.mirror = (DecodeMirror(num_layers, num_kv_heads, head_dim, dtype, self.kv.device, mirror_bytes)
                       if mirror_bytes else None)
        self.metadata: AttentionMetadata | None = None

    def plan(self, slots: list[int], sequence_of_token: list[int], positions: list[int],
             context_slots: Sequence[Sequence[int]], seq_ids: list[int] | None = None) -> AttentionMetadata:
        """The layout of one step whose new tokens are packed into one row: token t belongs to sequence
        `sequence_of_token[t]` (its tokens contiguous), sits at absolute position `positions[t]` and stores its
        KV in `slots[t]`; `context_slots[s]` are the slots of all of sequence s's tokens up to and including the
        new ones, in position order. `seq_ids[s]` (lasting ids, needed by the mirror) names sequence s. Touches
        no cache state but the mirror's plan, which steps must then `use` in the order they were planned."""
        device = self.kv.device
        first = {s: t for t, s in reversed(list(enumerate(sequence_of_token)))}
        counts = {s: sequence_of_token.count(s) for s in first}
        decode = [first[s] for s in sorted(first) if counts[s] == 1]
        contexts = [context_slots[sequence_of_token[t]] for t in decode]
        mirror = None
        if self.mirror is not None and seq_ids is not None and decode:
            mirror = self.mirror.plan([seq_ids[sequence_of_token[t]] for t in decode], contexts)
        # The gather's layout, needed only where the mirror is not read (an empty one where it is).
        S = max(map(len, contexts), default=0) if mirror is None else 0
        decode_context = torch.tensor([c[:S] + [0] * (S - len(c)) for c in contexts], dtype=torch.long,
                                      device=device).reshape(len(decode), S)
        lengths = torch.tensor([len(c) for c in contexts], device=device)
        chunks, fresh = [], {}
        for s in sorted(first):
            if counts[s] > 1:
                start, n = first[s], counts[s]
                if positions[start] == 0 and len(context_slots[s]) == n:
                    fresh.setdefault(n, []).append(list(range(start, start + n)))
                    continue
                context = torch.tensor(list(context_slots[s]), dtype=torch.long, device=device)
                pos = torch.tensor(positions[start:start + n], device=device)
                # Context entry j is the token at position j: a query at position p sees j <= p.
                sees = torch.arange(len(context), device=device)[None] <= pos[:, None]
                chunks.append((torch.arange(start, start + n, device=device), context, sees))
        return AttentionMetadata(torch.tensor(slots, dtype=torch.long, device=device),
                                 torch.tensor(decode, dtype=torch.long, device=device), decode_context,
                                 (torch.arange(S, device=device) < lengths[:, None])[:, None, None], chunks,
                                 [torch.tensor(rows, device=device) for rows in fresh.values()], mirror,
                                 bool(decode) and decode == list(range(len(sequence_of_token))))

    def use(self, metadata: AttentionMetadata) -> None:
        self.metadata = metadata
        if metadata.mirror is not None:
            self.mirror.reserve(metadata.mirror)

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
        out = None if m.decode_only else torch.empty_like(q)
        if len(m.decode_rows):
            queries = m.decode_part(q).transpose(0, 1)  # [Nd, H, d]
            if m.mirror is not None:
                attended = self._attend_mirrored(layer, m, queries, k, v)
            else:
                # index_select, not store[:, slots]: the same gather, measured 4x faster on the CPU
                context = store.index_select(1, m.decode_context.view(-1))
                keys, values = context.view(2, *m.decode_context.shape, *store.shape[2:]).permute(0, 1, 3, 2, 4)
                attended = decode_attention(queries, keys, values, m.decode_sees)
            if m.decode_only:
                return attended.transpose(0, 1)[None]
            out[0, :, m.decode_rows] = attended.transpose(0, 1)
        for rows in m.fresh:  # [G, n]: G whole prompts of n tokens, each causal over itself
            attended = F.scaled_dot_product_attention(q[0][:, rows].transpose(0, 1), k[0][:, rows].transpose(0, 1),
                                                      v[0][:, rows].transpose(0, 1), is_causal=True, enable_gqa=True)
            out[0][:, rows] = attended.transpose(0, 1)
        for rows, context, sees in m.chunks:
            keys, values = store.index_select(1, context).transpose(1, 2)  # [2, n_kv, S, d]
            attended = F.scaled_dot_product_attention(q[:, :, rows], keys[None], values[None], attn_mask=sees,
                                                      enable_gqa=True)
            out[0, :, rows] = attended[0]
        return out

    def _attend_mirrored(self, layer: int, m: AttentionMetadata, queries: torch.Tensor, k: torch.Tensor,
                         v: torch.Tensor) -> torch.Tensor:
        """Decode attention [Nd, H, d] over the mirror's rows, read in place."""
        plan, mirror = m.mirror, self.mirror
        mirror.fill(layer, plan, self.kv[layer])
        mirror.write(layer, plan, m.decode_part(k).transpose(0, 1), m.decode_part(v).transpose(0, 1))
        keys, values = mirror.keys_values(layer, plan)
        if not plan.in_order:  # rows with gaps: queries go to their rows, the gaps attend to nothing
            placed = queries.new_zeros((plan.num_rows, *queries.shape[1:]))
            placed[plan.rows] = queries
            queries = placed
        attended = decode_attention(queries, keys, values, plan.sees)
        return attended if plan.in_order else attended[plan.rows]

    def kv_bytes(self) -> int:
        """Bytes of the KV storage, all blocks of all layers."""
        return self.kv.numel() * self.kv.element_size()
