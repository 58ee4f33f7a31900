"""Paged KV blocks for the LLM path: which fixed-size blocks of KV storage each sequence owns, and the prefix
cache that lets a new prompt reuse the blocks of an earlier one with the same leading tokens.

Ids and counts only, no tensors: the KV lives in `PagedKVCache`'s storage, at the flat slots
`block_id * block_size + offset` handed out here. A full block is known by a hash chained through every block
before it, so equal hashes mean equal whole prefixes (the stored token ids are compared too, in case of a
collision). A freed block keeps its hash and contents as a cached free block: a later prompt that hits it takes
it back, and when fresh blocks run out the least recently freed one is evicted first.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

def hash_block(token_ids: Sequence[int], parent_hash: int | None) -> int:
    """The hash of a full block of `token_ids` after the prefix whose last block hashed to `parent_hash`
    (None for the first block): an unsigned 64-bit int identifying the whole prefix up to this block."""
    # One fixed function everywhere (not "xxhash when installed"): routers and instances of different
    # environments must name the same prefix alike.
    parent = b"" if parent_hash is None else parent_hash.to_bytes(8, "little")
    digest = hashlib.blake2b(parent + array("q", token_ids).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def prefix_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    """The chained hash of every full block of `token_ids` (a partial last block has none): the names under
    which a prefix cache holds the prompt's blocks, and what cache-aware routing matches."""
    hashes: list[int] = []
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        hashes.append(hash_block(token_ids[start:start + block_size], hashes[-1] if hashes else None))
    return hashes


class BlockManager:
    """Hands out KV blocks to sequences, shares full blocks between equal prefixes, and counts the hits.

    Block tables are lists of block ids, one per `block_size` tokens; the caller keeps one per sequence.
    """

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks, block_size: must be positive, got {num_blocks}, {block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.prefix_caching = prefix_caching  # off: nothing is registered, so nothing is ever a hit
        self.ref_count = [0] * num_blocks
        # Per block, once it is full: its chained hash and token ids. A block is reusable (registered) only while
        # `_hash_to_block` names it; a second block with the same prefix, computed alongside, stays unnamed.
        self._hash: list[int | None] = [None] * num_blocks
        self._tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self._hash_to_block: dict[int, int] = {}
        self._empty: deque[int] = deque(range(num_blocks))  # free, nothing reusable in it
        self._cached_free: OrderedDict[int, None] = OrderedDict()  # free and registered, least recently freed first
        self.hits = self.misses = 0  # prompt blocks reused / computed afresh, counted by `allocate`

    @classmethod
    def from_budget(cls, bytes_budget: int, block_size: int, num_layers: int, num_kv_heads: int, head_dim: int,
                    dtype: torch.dtype, prefix_caching: bool = True) -> BlockManager:
        """As many blocks as fit in `bytes_budget` of KV storage: each holds k and v of `block_size` tokens in
        every layer."""
        block_bytes = 2 * num_layers * block_size * num_kv_heads * head_dim * dtype.itemsize
        if bytes_budget < block_bytes:
            raise ValueError(f"bytes_budget: {bytes_budget} is less than one block of {block_bytes} bytes")
        return cls(bytes_budget // block_bytes, block_size, prefix_caching)

    @property
    def num_free_blocks(self) -> int:
        return len(self._empty) + len(self._cached_free)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._cached_free)

    @property
    def blocks_in_use(self) -> int:
        return self.num_blocks - self.num_free_blocks

    def _blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def registered_hashes(self, limit: int) -> list[int]:
        """Up to `limit` hashes of prefixes this cache can serve (what cache-aware routing matches against)."""
        return list(self._hash_to_block)[-limit:]

    def can_allocate(self, num_tokens: int) -> bool:
        """Whether a prompt of `num_tokens` surely fits: free blocks for all its blocks, as if none were a hit."""
        return self._blocks_for(num_tokens) <= self.num_free_blocks

    def allocate(self, token_ids: Sequence[int]) -> tuple[list[int], int]:
        """Blocks for a new sequence with prompt `token_ids`: (block_table, num_cached_tokens). The leading full
        blocks found in the cache are shared; the engine computes the prompt from `num_cached_tokens` on.

        The engine needs at least one computed token for logits, so a prompt that hits in every block gets its last
        block afresh and recomputes it (`num_cached_tokens = len - block_size`): writing even one token into the
        shared block would break the rule that a registered block is never written again."""
        if not token_ids:
            raise ValueError("token_ids: the prompt is empty")
        bs = self.block_size
        hit = self.cached_prefix(token_ids)
        if len(hit) * bs == len(token_ids):
            hit.pop()
        fresh = self._blocks_for(len(token_ids)) - len(hit)
        if fresh + sum(self.ref_count[b] == 0 for b in hit) > self.num_free_blocks:
            raise RuntimeError(f"allocate: {len(token_ids)} tokens need more than the {self.num_free_blocks} free "
                               f"blocks; check can_allocate first")
        # Hits leave the free list before fresh blocks are taken, so eviction cannot take a block just hit.
        for block in hit:
            if self.ref_count[block] == 0:
                del self._cached_free[block]
            self.ref_count[block] += 1
        self.hits += len(hit)
        self.misses += fresh
        return hit + [self._take_fresh() for _ in range(fresh)], len(hit) * bs

    def cached_prefix(self, token_ids: Sequence[int]) -> list[int]:
        """The registered blocks holding the leading full blocks of `token_ids`, up to the first one missing:
        only that run counts, since from the first miss on the engine computes every token anyway."""
        bs, hit = self.block_size, []
        for i, h in enumerate(prefix_hashes(token_ids, bs)):
            block = self._hash_to_block.get(h)
            if block is None or self._tokens[block] != tuple(token_ids[i * bs:(i + 1) * bs]):
                break
            hit.append(block)
        return hit

    def adopt(self, token_ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Blocks for the full blocks of `token_ids` whose KV comes from elsewhere (a prefill instance): a block
        this cache holds already is shared, a missing one is taken fresh and registered, as long as blocks are
        free. Returns (block_table, indices of the fresh blocks): the caller writes their KV before any step can
        read it, then frees the table, which leaves them cached under their hashes."""
        if not self.prefix_caching:
            raise ValueError("prefix_caching: adopting blocks needs the prefix cache on")
        bs, table, fresh = self.block_size, [], []
        for i, h in enumerate(prefix_hashes(token_ids, bs)):
            tokens = tuple(token_ids[i * bs:(i + 1) * bs])
            block = self._hash_to_block.get(h)
            if block is not None and self._tokens[block] != tokens:
                break  # a hash collision: the name stays with the block that has it
            if block is not None:
                if self.ref_count[block] == 0:
                    del self._cached_free[block]
                self.ref_count[block] += 1
            elif self.num_free_blocks:
                block = self._take_fresh()
                self._hash[block], self._tokens[block] = h, tokens
                self._hash_to_block[h] = block
                fresh.append(i)
            else:
                break
            table.append(block)
        return table, fresh

    def forget(self, blocks: list[int]) -> None:
        """Unregisters `blocks` (their KV never arrived): freed, they hold nothing reusable."""
        for block in blocks:
            if self._hash_to_block.get(self._hash[block]) == block:
                del self._hash_to_block[self._hash[block]]
            self._hash[block] = self._tokens[block] = None

    def can_append(self, block_table: list[int], num_tokens_after: int) -> bool:
        """Whether the sequence can grow to `num_tokens_after` tokens: the blocks it lacks are free."""
        return self._blocks_for(num_tokens_after) - len(block_table) <= self.num_free_blocks

    def append_slot(self, block_table: list[int], token_ids: Sequence[int], extra: int = 0) -> None:
        """Call before the step that computes the sequence's KV up to `len(token_ids)` (its full token list so far:
        a decode token's, or a prefill chunk's end): grows `block_table` in place to cover the tokens, and
        registers the blocks they fill, so that prompts allocated from now on can reuse them.

        A registered block counts as computed from this step on. A prompt that reuses it may run in this same
        step: `PagedKVCache.attend` writes all of a step's new KV before any sequence reads.

        `extra` reserves room for that many more tokens without registering them (speculative drafts, which
        may be rejected and overwritten: a registered block is never written again)."""
        missing = self._blocks_for(len(token_ids) + extra) - len(block_table)
        if missing > self.num_free_blocks:
            raise RuntimeError(f"append_slot: {missing} blocks needed, {self.num_free_blocks} free; "
                               f"check can_append first")
        block_table.extend(self._take_fresh() for _ in range(missing))
        bs, full = self.block_size, len(token_ids) // self.block_size
        first = full  # the blocks before the first one still unhashed are hashed: find it walking back
        while first > 0 and self._hash[block_table[first - 1]] is None:
            first -= 1
        for i in range(first, full):
            block, tokens = block_table[i], tuple(token_ids[i * bs:(i + 1) * bs])
            self._hash[block] = hash_block(tokens, self._hash[block_table[i - 1]] if i else None)
            self._tokens[block] = tokens
            # The first block registered for a prefix keeps the name: it may already be shared or cached free.
            if self.prefix_caching:
                self._hash_to_block.setdefault(self._hash[block], block)

    def free(self, block_table: list[int]) -> None:
        """Release a sequence's blocks. Those no longer used by any sequence become free; registered ones keep their
        hash and contents as cached free blocks until evicted."""
        if any(self.ref_count[b] == 0 for b in block_table):
            raise ValueError("free: the block table holds a block that is already free")
        # Last block first: it is then evicted before the blocks of its prefix, which every prompt hitting it needs.
        for block in reversed(block_table):
            self.ref_count[block] -= 1
            if self.ref_count[block] == 0:
                if self._hash_to_block.get(self._hash[block]) == block:
                    self._cached_free[block] = None
                else:
                    self._empty.append(block)

    def slot_mapping(self, block_table: list[int], start: int, end: int) -> list[int]:
        """The flat KV slots of the sequence's token positions start..end-1."""
        bs = self.block_size
        return [block_table[p // bs] * bs + p % bs for p in range(start, end)]

    def context_slots(self, block_table: list[int], end: int) -> ContextSlots:
        """The slots of positions 0..end-1, listed only when read."""
        return ContextSlots(self, block_table, end)

    def _take_fresh(self) -> int:
        if self._empty:
            block = self._empty.popleft()
        else:
            block, _ = self._cached_free.popitem(last=False)
            del self._hash_to_block[self._hash[block]]
        self._hash[block] = self._tokens[block] = None
        self.ref_count[block] = 1
        return block


class ContextSlots:
    """A sequence's KV slots for positions 0..end-1 as a list made on demand: a decode step that the mirror serves
    needs only each context's length, and listing ~300 slots for each of 16 sequences cost ~0.8 ms a step."""

    __slots__ = ("blocks", "block_table", "end")

    def __init__(self, blocks: BlockManager, block_table: list[int], end: int):
        self.blocks, self.block_table, self.end = blocks, block_table, end

    def __len__(self) -> int:
        return self.end

    def __getitem__(self, index: slice) -> list[int]:
        start, stop, stride = index.indices(self.end)
        if stride != 1:
            raise ValueError("context slots are read in runs: a slice without a step")
        return self.blocks.slot_mapping(self.block_table, start, stop)

    def __iter__(self):
        return iter(self[:])
