"""KV of cached prompt prefixes in and out of an LLM engine's paged cache (PD disaggregation): a prefill
instance exports the leading full blocks its prefix cache holds; a decode instance adopts them into its own,
so that a prompt starting with them computes only its remainder. The engine's lock guards every block-table
change; the KV itself is written on the compute thread, ahead of any step that may read it."""
from __future__ import annotations

import functools
import threading
from concurrent.futures import Future
from typing import Callable

import torch

from grserve.engine.failure import settle
from grserve.kv.llm.block_manager import BlockManager
from grserve.kv.llm.transfer import KVBlocks


class PrefixTransfer:
    def __init__(self, blocks: BlockManager, lock: threading.Lock):
        self.blocks, self.lock = blocks, lock
        self.pending: list[tuple[KVBlocks, Future]] = []  # imports not yet adopted
        self.open: set[Future] = set()  # imports not yet answered (failed if the engine dies)
        self.num_imported_blocks = 0

    def export(self, kv: torch.Tensor, token_ids: list[int]) -> KVBlocks:
        """The KV of the leading full blocks of `token_ids` that the prefix cache holds. Read under the lock: a
        cached block is never written again until a schedule, which takes the lock, hands it out afresh."""
        with self.lock:
            blocks = self.blocks.cached_prefix(token_ids)
            length = len(blocks) * self.blocks.block_size
            slots = torch.tensor(self.blocks.slot_mapping(blocks, 0, length), dtype=torch.long, device=kv.device)
            data = kv[:, :, slots].cpu()
        return KVBlocks(self.blocks.block_size, list(token_ids[:length]), data)

    def check(self, blocks: KVBlocks, kv: torch.Tensor, layers: int, kv_heads: int, head_dim: int) -> None:
        """Raises ValueError ("field: reason") for blocks that do not fit this cache."""
        expected = [layers, 2, len(blocks.token_ids), kv_heads, head_dim]
        if blocks.block_size != self.blocks.block_size:
            raise ValueError(f"block_size: {blocks.block_size} differs from this cache's {self.blocks.block_size}")
        if list(blocks.kv.shape) != expected or blocks.kv.dtype != kv.dtype:
            raise ValueError(f"kv: {list(blocks.kv.shape)} {blocks.kv.dtype} does not fit this model's "
                             f"{expected} {kv.dtype}")
        if not self.blocks.prefix_caching:
            raise ValueError("prefix_caching: adopting blocks needs the prefix cache on")

    def add(self, blocks: KVBlocks) -> Future:
        """Queues an import (with the lock held); the future gives the number of blocks written."""
        future: Future = Future()
        self.pending.append((blocks, future))
        self.open.add(future)
        future.add_done_callback(self.open.discard)
        return future

    def adopt(self, kv: torch.Tensor) -> list[Callable[[], None]]:
        """Registers the blocks of every pending import (on the thread that schedules, so that no step is
        scheduled between); returns for each the work that writes its KV into `kv`, to run on the compute
        thread ahead of any step that may read it."""
        with self.lock:
            imports, self.pending = self.pending, []
            adopted = [(blocks, future, *self.blocks.adopt(blocks.token_ids)) for blocks, future in imports]
        return [functools.partial(self._write, kv, *a) for a in adopted]

    def _write(self, kv: torch.Tensor, blocks: KVBlocks, future: Future, table: list[int], fresh: list[int]) -> None:
        length = len(fresh) * self.blocks.block_size
        # Block i of the payload holds its tokens i*bs.. : the payload's rows map like a block table of `fresh`.
        rows = torch.tensor(self.blocks.slot_mapping(fresh, 0, length), dtype=torch.long)
        slots = torch.tensor(self.blocks.slot_mapping([table[i] for i in fresh], 0, length), dtype=torch.long)
        try:
            kv[:, :, slots.to(kv.device)] = blocks.kv[:, :, rows].to(kv.device)
        except Exception as e:  # unregister what was not written: nothing may hit a block of garbage
            with self.lock:
                self.blocks.forget([table[i] for i in fresh])
                self.blocks.free(table)
            settle(future, error=e)
            return
        with self.lock:
            self.blocks.free(table)  # cached under their hashes from now on
            self.num_imported_blocks += len(fresh)
        settle(future, len(fresh))
