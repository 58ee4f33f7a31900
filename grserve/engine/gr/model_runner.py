"""Tensors in, beams out: the only engine file that touches the model and the device.

`prepare` is host work (padding prompts, masks, filters) and may run on another thread while the
previous batch computes. `run` does the whole fixed step: prefill, then per level gather the logits at
the trie children of each beam, select the next beams, and decode them against the KV cache (L - 1 decode
rounds for SIDs of L levels). A batch runs on the candidate tables of its requests' catalog version (one per
batch, as the scheduler cuts steps), with the version's disabled items closed to every request."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from grserve.beam.filters import NodeFilter, build_filter, open_children
from grserve.beam.topk import early_topk, full_topk, per_beam_topk
from grserve.bundle import GRBundle
from grserve.catalog.snapshot import CatalogSnapshot
from grserve.engine.gr.config import EngineConfig
from grserve.engine.gr.request import GRRequest
from grserve.items.vocab import PAD
from grserve.kv.gr.expanded_kv import ExpandedKVCache
from grserve.kv.gr.separated_kv import SeparatedKVCache
from grserve.model.compiled import compile_layers, is_compiled, uncompile
from grserve.model.quantized import is_quantized, quantize_int8


@dataclass
class PreparedBatch:
    requests: list[GRRequest]
    ids: torch.Tensor  # [R, P] left-padded prompts
    positions: torch.Tensor
    valid: torch.Tensor  # [R, P] bool
    mask: torch.Tensor  # [R, 1, P, P] bool
    lengths: torch.Tensor  # [R]
    widths: torch.Tensor  # [R] beam width per request
    filters: list[NodeFilter | None]
    catalog: CatalogSnapshot  # the version every request of the batch is answered on

    @property
    def width(self) -> int:
        """The widest request's beam: the grid's width in beam selection."""
        return int(self.widths.max())

    @property
    def rows(self) -> int:
        """Beam rows the step computes: each request's own width (rows are packed, not padded)."""
        return int(self.widths.sum())


@dataclass
class BatchBeams:
    """Final beams of each request: leaves (trie leaf indices) and scores, best first; and where the
    step's time went."""

    leaves: list[list[int]]
    scores: list[list[float]]
    prefill_s: float = 0.0
    decode_s: float = 0.0
    select_s: float = 0.0
    kv_bytes: int = 0


class GRModelRunner:
    def __init__(self, bundle: GRBundle, config: EngineConfig):
        self.bundle, self.config = bundle, config
        self.device = torch.device(config.device)
        # Version 0, the bundle's own table: the catalog of requests that name none.
        self.catalog = CatalogSnapshot.build(0, bundle.table, trie=bundle.trie)
        if config.quantization == "int8" and not is_quantized(bundle.model):  # for good: the float weights go
            quantize_int8(bundle.model)
        # The bundle's model is this engine's alone while it runs (the benchmarks' turns restart engines on it
        # with and without compile).
        if config.compile and not is_compiled(bundle.model):
            compile_layers(bundle.model)
        elif not config.compile:
            uncompile(bundle.model)
        mc, rounds = bundle.model.config, bundle.vocab.levels - 1  # every level after the first is a decode round
        if config.separated_kv:  # the unshared buffer is allocated here once and reused by every batch
            self.kv = SeparatedKVCache(mc.num_hidden_layers, mc.num_key_value_heads, mc.head_dim,
                                       config.max_batch_rows, rounds, dtype=next(bundle.model.parameters()).dtype,
                                       device=self.device)
        else:
            self.kv = ExpandedKVCache(mc.num_hidden_layers, config.max_batch_rows, rounds)

    def prepare(self, requests: list[GRRequest]) -> PreparedBatch:
        # Host work in numpy: torch ops here would start a second OpenMP team beside the step thread's,
        # and on few cores the two teams slow each other down.
        R, P = len(requests), max(len(r.prompt) for r in requests)
        ids = np.full((R, P), PAD, dtype=np.int64)
        valid = np.zeros((R, P), dtype=bool)
        for i, r in enumerate(requests):
            ids[i, P - len(r.prompt):] = r.prompt
            valid[i, P - len(r.prompt):] = True
        mask = np.tril(np.ones((P, P), dtype=bool)) & valid[:, None, :]
        catalog = requests[0].catalog or self.catalog
        if any((r.catalog or self.catalog) is not catalog for r in requests):
            raise ValueError("a batch mixes catalog versions: each is answered on one version's tables")
        filters = [build_filter(catalog.tables, r.exclude, r.allow, catalog.availability) for r in requests]
        positions = np.maximum(valid.cumsum(1) - 1, 0)
        return PreparedBatch(requests, torch.from_numpy(ids), torch.from_numpy(positions), torch.from_numpy(valid),
                             torch.from_numpy(mask[:, None]), torch.from_numpy(valid.sum(1)),
                             torch.tensor([r.beam_width for r in requests]), filters, catalog)

    def _logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits[:, -1].float(), dim=-1).cpu()

    @torch.no_grad()
    def run(self, batch: PreparedBatch) -> BatchBeams:
        """Rows are packed: each request computes only its own live beams (at most its own width), never rows
        padded to the batch's widest. Selection works on the R x W grid of (request, beam) slots, where a packed
        row sits at grid position `grid[i]`; the model and the KV see only the packed rows."""
        dev, model, vocab = self.device, self.bundle.model, self.bundle.vocab
        R, W = len(batch.requests), batch.width
        clock = time.perf_counter()
        logits, shared = model(batch.ids.to(dev), batch.positions.to(dev), batch.mask.to(dev))
        logprobs = self._logprobs(logits)
        spent = {"prefill": time.perf_counter() - clock, "decode": 0.0, "select": 0.0}
        nodes, scores = torch.zeros(R, dtype=torch.long), torch.zeros(R)
        grid, grid_width = torch.arange(R), 1  # level 0: one row per request
        tokens = None
        for level in range(vocab.levels):
            if level > 0:
                clock = time.perf_counter()
                if level == 1:
                    self.kv.begin(shared, batch.valid.to(dev), W, grid.to(dev))
                pos = (batch.lengths[grid // grid_width] + level - 1)[:, None]
                logits, _ = model(tokens[:, None].to(dev), pos.to(dev), past=self.kv)
                logprobs = self._logprobs(logits)
                spent["decode"] += time.perf_counter() - clock
            clock = time.perf_counter()
            parent_slot, slot, best = self._select(batch, level, logprobs, nodes, scores, grid, grid_width, W)
            # The new packed rows: the live grid slots, each continuing the packed row its parent slot holds.
            packed_of_slot = torch.full((R * grid_width,), -1, dtype=torch.long)
            packed_of_slot[grid] = torch.arange(len(grid))
            keep = torch.isfinite(best)
            grid, grid_width = keep.nonzero().squeeze(1), W
            parent = packed_of_slot[parent_slot[keep]]
            table = batch.catalog.tables.levels[level]
            nodes, scores = table.base[nodes[parent]] + slot[keep], best[keep]
            tokens = table.token_of(nodes)
            if 0 < level < vocab.levels - 1:  # the next round reads the decode KV of each beam's parent
                self.kv.reorder(parent.to(dev), grid.to(dev))
            spent["select"] += time.perf_counter() - clock
            if not len(grid):
                break  # every beam was filtered out: no request has anything left to decode
        counts = torch.bincount(grid // W, minlength=R).tolist()  # packed rows stay best first per request
        return BatchBeams([t.tolist() for t in nodes.split(counts)], [t.tolist() for t in scores.split(counts)],
                          spent["prefill"], spent["decode"], spent["select"], sum(self.kv.kv_bytes().values()))

    def _candidates(self, batch, level, logprobs, nodes, scores, grid, grid_width, W):
        """Each packed row's best W children: (values, child slots) [rows, k], sorted."""
        tables, availability = batch.catalog.tables, batch.catalog.availability
        table = tables.levels[level]
        D = table.max_degree
        children, ok = table.slots(nodes)
        tokens = table.tokens(children, ok)
        if availability is not None:
            ok &= availability.opens(level, children)
        opened = open_children(batch.filters, grid // grid_width, children, level, tables.num_nodes(level))
        if opened is not None:
            ok &= opened
        if self.config.trie_candidates:
            cand = (scores[:, None] + logprobs.gather(1, tokens)).masked_fill(~ok, float("-inf"))
            return per_beam_topk(cand, W)
        # Ablation: mask the whole vocabulary row, top-k over it, then find each token's child slot.
        dense = torch.full_like(logprobs, float("-inf"))
        # Closed slots all write -inf to token 0 (<pad>, never a child), so only open children are 0.
        dense.scatter_(1, torch.where(ok, tokens, PAD), torch.zeros(ok.shape).masked_fill(~ok, float("-inf")))
        values, top_tokens = per_beam_topk(scores[:, None] + logprobs + dense, W)
        return values, torch.searchsorted(tokens, top_tokens).clamp(max=D - 1)

    def _select(self, batch, level, logprobs, nodes, scores, grid, grid_width, W):
        """Best W children per request over its packed rows → (parent grid slot, child slot, score) for the
        R x W new grid slots, request-major; slots past a request's own width (or its supply of candidates)
        score -inf."""
        R = len(batch.requests)
        values, slots = self._candidates(batch, level, logprobs, nodes, scores, grid, grid_width, W)
        k = values.shape[1]
        # Back on the grid for the per-request selection: absent slots hold no candidate.
        grid_values = torch.full((R * grid_width, k), float("-inf"))
        grid_values[grid] = values
        grid_slots = torch.zeros((R * grid_width, k), dtype=torch.long)
        grid_slots[grid] = slots
        select = early_topk if self.config.early_topk else full_topk
        best, beam, column = select(grid_values.view(R, grid_width, k), W)
        if best.shape[1] < W:  # fewer candidates than beams: pad with dead slots
            pad = W - best.shape[1]
            best = torch.cat([best, best.new_full((best.shape[0], pad), float("-inf"))], 1)
            beam, column = (torch.cat([t, t.new_zeros((t.shape[0], pad))], 1) for t in (beam, column))
        best = best.masked_fill(torch.arange(W)[None] >= batch.widths[:, None], float("-inf"))
        if level < self.bundle.vocab.levels - 1:
            # New beams grouped by parent, so the KV reorder gathers rows in order.
            order = beam.argsort(dim=1, stable=True)
            best, beam, column = (t.gather(1, order) for t in (best, beam, column))
        parent = (torch.arange(R)[:, None] * grid_width + beam).reshape(-1)
        return parent, grid_slots[parent, column.reshape(-1)], best.reshape(-1)
