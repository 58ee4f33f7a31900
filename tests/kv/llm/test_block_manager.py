"""BlockManager by hand: allocation, shared prefixes, ref counts, cached free blocks, LRU eviction, hash chaining."""

import pytest
import torch

from grserve.kv.llm import block_manager
from grserve.kv.llm.block_manager import BlockManager, hash_block

BS = 4


def registered(manager: BlockManager, tokens: list[int]) -> list[int]:
    """Allocate a prompt and register its full blocks, as the engine does before the prefill step."""
    table, _ = manager.allocate(tokens)
    manager.append_slot(table, tokens)
    return table


def test_allocate_fresh_blocks():
    manager = BlockManager(8, BS)
    table, cached = manager.allocate(list(range(10)))
    assert len(table) == len(set(table)) == 3 and cached == 0
    assert (manager.num_free_blocks, manager.blocks_in_use, manager.misses, manager.hits) == (5, 3, 3, 0)
    assert manager.slot_mapping(table, 3, 6) == [table[0] * BS + 3, table[1] * BS, table[1] * BS + 1]


def test_shared_prefix_ref_counts_and_cached_free_reuse():
    manager = BlockManager(10, BS)
    a = list(range(1, 15))  # 3 full blocks + 2 tokens
    table_a = registered(manager, a)
    b = a[:12] + [99, 98]
    table_b, cached = manager.allocate(b)
    assert cached == 3 * BS and manager.hits == 3
    assert table_b[:3] == table_a[:3] and table_b[3] != table_a[3]
    assert manager.blocks_in_use == 5  # 3 shared + one tail each
    manager.free(table_a)
    assert manager.blocks_in_use == 4  # the shared blocks live on in b
    assert manager.num_cached_blocks == 0  # a's partial tail holds nothing reusable
    manager.free(table_b)
    assert (manager.blocks_in_use, manager.num_free_blocks, manager.num_cached_blocks) == (0, 10, 3)
    # Freed but cached: a third prompt with the same prefix takes the blocks back.
    table_c, cached = manager.allocate(a[:12] + [7])
    assert cached == 3 * BS and table_c[:3] == table_a[:3] and manager.hits == 6
    assert manager.num_cached_blocks == 0 and manager.blocks_in_use == 4
    with pytest.raises(ValueError):
        manager.free(table_a[3:])


def test_a_prompt_hit_in_every_block_recomputes_its_last_block():
    manager = BlockManager(4, BS)
    a = list(range(8))
    table_a = registered(manager, a)
    table, cached = manager.allocate(a)
    assert cached == BS and table[0] == table_a[0] and table[1] != table_a[1]
    assert (manager.hits, manager.misses) == (1, 3)
    # The recomputed copy does not take the registered block's name: freeing it caches nothing more.
    manager.append_slot(table, a)
    manager.free(table)
    assert manager.num_cached_blocks == 0
    manager.free(table_a)
    assert manager.num_cached_blocks == 2


def test_lru_eviction_takes_the_least_recently_freed_block_first():
    manager = BlockManager(4, BS)
    x, y = [1, 1, 1, 1, 0], [2, 2, 2, 2, 0]  # one full block + one partial each
    table_x, table_y = registered(manager, x), registered(manager, y)
    manager.free(table_x)
    manager.free(table_y)
    assert manager.num_cached_blocks == 2
    # Three fresh blocks: the two partial tails (empty), then x's block, freed before y's.
    table_z = registered(manager, list(range(10, 22)))
    assert table_x[0] in table_z and table_y[0] not in table_z
    assert manager.num_cached_blocks == 1
    manager.free(table_z)
    _, cached_y = manager.allocate(y)
    _, cached_x = manager.allocate(x)
    assert (cached_y, cached_x) == (BS, 0)


def test_hashes_chain_through_the_prefix():
    assert hash_block([5, 6, 7, 8], None) == hash_block([5, 6, 7, 8], None)
    assert hash_block([5, 6, 7, 8], hash_block([1, 2, 3, 4], None)) != hash_block([5, 6, 7, 8], None)
    manager = BlockManager(8, BS)
    registered(manager, [1, 2, 3, 4, 5, 6, 7, 8, 0])
    _, cached = manager.allocate([9, 9, 9, 9, 5, 6, 7, 8, 0])
    assert cached == 0 and manager.hits == 0


def test_a_hash_collision_is_not_a_hit(monkeypatch):
    monkeypatch.setattr(block_manager, "hash_block", lambda tokens, parent: 42)
    manager = BlockManager(8, BS)
    registered(manager, [1, 2, 3, 4, 0])
    _, cached = manager.allocate([5, 6, 7, 8, 0])
    assert cached == 0 and manager.hits == 0


def test_capacity_checks():
    manager = BlockManager(2, BS)
    assert manager.can_allocate(8) and not manager.can_allocate(9)
    table, _ = manager.allocate([1, 2, 3])
    assert manager.can_append(table, 4) and manager.can_append(table, 5)
    manager.append_slot(table, [1, 2, 3, 4, 5])
    assert len(table) == 2 and manager.num_free_blocks == 0
    assert not manager.can_allocate(1) and not manager.can_append(table, 9) and manager.can_append(table, 8)
    with pytest.raises(RuntimeError):
        manager.allocate([1])
    with pytest.raises(RuntimeError):
        manager.append_slot(table, list(range(9)))


def test_decode_filling_a_block_registers_it():
    manager = BlockManager(8, BS)
    tokens = [3, 1, 4]
    table, _ = manager.allocate(tokens)
    for token in [1, 5, 9]:  # decode: the block fills at the 4th token, a new one starts at the 5th
        tokens.append(token)
        manager.append_slot(table, tokens)
    assert len(table) == 2
    other, cached = manager.allocate([3, 1, 4, 1, 2])
    assert cached == BS and other[0] == table[0]


def test_from_budget():
    # Per block: k and v, 2 layers, 16 tokens, 2 kv heads, head_dim 8, 2 bytes = 2048 bytes.
    manager = BlockManager.from_budget(10_000, 16, 2, 2, 8, torch.float16)
    assert (manager.num_blocks, manager.block_size) == (4, 16)
    with pytest.raises(ValueError):
        BlockManager.from_budget(2047, 16, 2, 2, 8, torch.float16)


def test_prefix_hashes_name_the_blocks_a_prompt_registers():
    manager = BlockManager(8, BS)
    tokens = list(range(30, 41))  # 2 full blocks + 3 tokens
    registered(manager, tokens)
    expected = [hash_block(tokens[:4], None)]
    expected.append(hash_block(tokens[4:8], expected[0]))
    assert block_manager.prefix_hashes(tokens, BS) == expected == manager.registered_hashes(10)


def test_adopted_blocks_are_cached_under_their_hashes():
    """Blocks whose KV arrives from a prefill instance: the one already held is shared, the others taken fresh,
    and once the table is freed a prompt with that prefix hits all of them."""
    manager = BlockManager(6, BS)
    tokens = list(range(50, 63))  # 3 full blocks + 1 token
    held = registered(manager, tokens[:4])
    table, fresh = manager.adopt(tokens)
    assert len(table) == 3 and table[0] == held[0] and fresh == [1, 2]
    manager.free(table)
    manager.free(held)
    hit, cached = manager.allocate(tokens)
    assert hit[:3] == table and cached == 12 and manager.hits == 3


def test_adoption_stops_when_blocks_run_out():
    manager = BlockManager(2, BS)
    table, fresh = manager.adopt(list(range(12)))
    assert len(table) == 2 and fresh == [0, 1]
    with pytest.raises(ValueError, match="^prefix_caching"):
        BlockManager(2, BS, prefix_caching=False).adopt(list(range(4)))


def test_forgotten_blocks_are_no_longer_hits():
    manager = BlockManager(4, BS)
    table, fresh = manager.adopt(list(range(8)))
    manager.forget(table)
    manager.free(table)
    assert manager.allocate(list(range(8)))[1] == 0 and manager.num_cached_blocks == 0


def test_context_slots_list_the_slots_of_each_position_only_when_read():
    manager = BlockManager(8, 4)  # worked by hand: block b holds slots 4b..4b+3
    context = manager.context_slots([5, 2], 6)  # positions 0-3 in block 5, 4-5 in block 2
    assert len(context) == 6
    assert list(context) == [20, 21, 22, 23, 8, 9]
    assert context[:-1] == [20, 21, 22, 23, 8] and context[2:5] == [22, 23, 8] and context[6:] == []
    with pytest.raises(ValueError, match="without a step"):
        context[::2]
