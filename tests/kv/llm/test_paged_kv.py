"""PagedKVCache: prefill (whole or chunked), decode and prefix-cache hits, mixed in batched steps, give the logits
of a plain forward of each complete sequence, with decode reading the mirror, gathering, or mirroring until the
mirror no longer fits."""

import pytest
import torch

from grserve.kv.llm.block_manager import BlockManager
from grserve.kv.llm.paged_kv import PagedKVCache
from grserve.model import Transformer
from tests.kv import ARCHITECTURES, tiny_model

BS = 4
# One step's work for one sequence: (block table, its tokens so far, first and end position computed now).
Work = tuple[list[int], list[int], int, int]


def paged(model: Transformer, num_blocks: int, mirror_bytes: int = 0) -> tuple[BlockManager, PagedKVCache]:
    c = model.config
    return (BlockManager(num_blocks, BS),
            PagedKVCache(c.num_hidden_layers, num_blocks, BS, c.num_key_value_heads, c.head_dim,
                         mirror_bytes=mirror_bytes))


@torch.no_grad()
def run_step(model: Transformer, manager: BlockManager, cache: PagedKVCache, work: list[Work]) -> None:
    """One engine step, every sequence's new tokens packed into one row; each sequence's logits checked against a
    full forward."""
    ids, positions, slots, owner, contexts = [], [], [], [], []
    for i, (table, tokens, start, end) in enumerate(work):
        ids += tokens[start:end]
        positions += range(start, end)
        slots += manager.slot_mapping(table, start, end)
        owner += [i] * (end - start)
        contexts.append(manager.slot_mapping(table, 0, end))
    # A sequence's block table is its lasting id here, as its seq_id is in the engine.
    cache.use(cache.plan(slots, owner, positions, contexts, [id(table) for table, *_ in work]))
    logits, returned = model(torch.tensor([ids]), torch.tensor([positions]), past=cache)
    assert returned is cache
    offset = 0
    for _, tokens, start, end in work:
        expected, _ = model(torch.tensor(tokens[:end])[None], torch.arange(end)[None])
        torch.testing.assert_close(logits[0, offset:offset + end - start], expected[0, start:end], atol=1e-4,
                                   rtol=1e-4)
        offset += end - start


def two_rows(model: Transformer) -> int:
    """Mirror bytes for 2 rows of 64 positions (its smallest length), not the 4 rows it grows to for a third:
    the mirror is dropped and rebuilt as the set of decoding sequences changes."""
    c = model.config
    return c.num_hidden_layers * 2 * 2 * c.num_key_value_heads * 64 * c.head_dim * 4


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("chunk", [None, 5])
@pytest.mark.parametrize("mirror", ["off", "ample", "two rows"])
def test_prefill_chunks_and_decode_match_full_forward(architecture, chunk, mirror):
    """Prompts of 7, 13 and 3 tokens, prefilled whole or 5 tokens a step, then 3 decode tokens each; with chunks,
    one sequence's prefill chunk shares a step with another's decode token, and sequences start and stop
    decoding at different steps (mirror rows are taken, freed and reused)."""
    model = tiny_model(architecture)
    manager, cache = paged(model, num_blocks=16, mirror_bytes={"off": 0, "ample": 1 << 20,
                                                               "two rows": two_rows(model)}[mirror])
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 64, (n,), generator=g).tolist() for n in (7, 13, 3)]
    tables = [manager.allocate(p)[0] for p in prompts]
    tokens, computed = [list(p) for p in prompts], [0] * 3
    while any(c < len(p) + 3 for c, p in zip(computed, prompts)):
        work = []
        for i, prompt in enumerate(prompts):
            if computed[i] < len(prompt):
                end = len(prompt) if chunk is None else min(len(prompt), computed[i] + chunk)
            elif computed[i] < len(prompt) + 3:
                tokens[i].append(int(torch.randint(1, 64, (), generator=g)))
                end = computed[i] + 1
            else:
                continue
            manager.append_slot(tables[i], tokens[i][:end])
            work.append((tables[i], tokens[i], computed[i], end))
            computed[i] = end
        run_step(model, manager, cache, work)
    assert manager.hits == 0 and manager.blocks_in_use == 3 + 4 + 2
    for table in tables:
        manager.free(table)
    assert manager.num_free_blocks == 16


@pytest.mark.parametrize("same_step", [False, True])
def test_prefix_hit_computes_only_the_remainder(same_step):
    """b shares a's first 2 blocks: allocated after a's are registered, it computes tokens 8.. only, either in a
    later step (a finished and freed, its blocks cached) or in a's own prefill step."""
    model = tiny_model("LlamaForCausalLM")
    manager, cache = paged(model, num_blocks=12)
    g = torch.Generator().manual_seed(1)
    a = torch.randint(1, 64, (11,), generator=g).tolist()
    b = a[:8] + torch.randint(1, 64, (5,), generator=g).tolist()
    table_a, _ = manager.allocate(a)
    manager.append_slot(table_a, a)
    if not same_step:
        run_step(model, manager, cache, [(table_a, a, 0, 11)])
        manager.free(table_a)
    table_b, cached = manager.allocate(b)
    assert cached == 8 and table_b[:2] == table_a[:2] and manager.hits == 2
    manager.append_slot(table_b, b)
    work = [(table_a, a, 0, 11)] if same_step else []
    run_step(model, manager, cache, work + [(table_b, b, 8, 13)])
    # A prompt that hits in every block still computes its last block.
    table_c, cached = manager.allocate(a[:8])
    assert cached == 4 and table_c[0] == table_a[0]
    run_step(model, manager, cache, [(table_c, a[:8], 4, 8)])


@torch.no_grad()
def test_attend_writes_slots_and_sees_only_each_sequences_context():
    """A 3-token chunk at positions 0-2 (slots 4-6) beside a decode token at position 2 (slot 9, context 12, 13, 9),
    worked by hand: the chunk's first query sees only its own first key, so its output is that key's value."""
    cache = PagedKVCache(num_layers=1, num_blocks=4, block_size=BS, num_kv_heads=2, head_dim=8)
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 4, 4, 8, generator=g)
    k, v = torch.randn(2, 1, 2, 4, 8, generator=g)
    cache.kv[0, :, 12:14] = torch.randn(2, 2, 2, 8, generator=g)
    cache.use(cache.plan([4, 5, 6, 9], [0, 0, 0, 1], [0, 1, 2, 2], [[4, 5, 6], [12, 13, 9]]))
    assert not cache.metadata.decode_only
    out = cache.attend(0, q, k, v)
    torch.testing.assert_close(cache.kv[0, 0, 4:7], k[0, :, :3].transpose(0, 1))
    torch.testing.assert_close(cache.kv[0, 1, 9], v[0, :, 3])
    torch.testing.assert_close(out[0, :, 0], v[0, :, 0].repeat_interleave(2, dim=0))
    # The decode query: plain softmax attention over the three context keys, per kv head.
    keys, values = cache.kv[0, 0, [12, 13, 9]], cache.kv[0, 1, [12, 13, 9]]  # [3, n_kv, d]
    for h in range(4):
        weights = torch.softmax(keys[:, h // 2] @ q[0, h, 3] / 8 ** 0.5, 0)
        torch.testing.assert_close(out[0, h, 3], weights @ values[:, h // 2])


@torch.no_grad()
@pytest.mark.parametrize("mirror_bytes", [0, 1 << 16])
def test_a_decode_only_step_attends_each_token_over_its_context(mirror_bytes):
    """Two decode tokens and nothing else (the step q, k, v are read as views, not indexed), worked by hand:
    each query's softmax attention over its sequence's context, its own new key last."""
    cache = PagedKVCache(num_layers=1, num_blocks=4, block_size=BS, num_kv_heads=2, head_dim=8,
                         mirror_bytes=mirror_bytes)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 2, 8, generator=g)
    k, v = torch.randn(2, 1, 2, 2, 8, generator=g)
    cache.kv[0, :, [0, 1, 4]] = torch.randn(2, 3, 2, 8, generator=g)
    plan = cache.plan([2, 5], [0, 1], [2, 1], [[0, 1, 2], [4, 5]], [10, 11])
    assert plan.decode_only and not cache.plan([2, 5], [0, 0], [2, 3], [[0, 1, 2, 5]]).decode_only
    cache.use(plan)
    out = cache.attend(0, q, k, v)
    assert out.shape == q.shape
    for t, context in enumerate([[0, 1, 2], [4, 5]]):
        keys, values = cache.kv[0, 0, context], cache.kv[0, 1, context]  # [S, n_kv, d], the new key stored
        for h in range(4):
            weights = torch.softmax(keys[:, h // 2] @ q[0, h, t] / 8 ** 0.5, 0)
            torch.testing.assert_close(out[0, h, t], weights @ values[:, h // 2])


def test_kv_bytes_match_the_budget_sizing():
    cache = PagedKVCache(num_layers=2, num_blocks=5, block_size=16, num_kv_heads=2, head_dim=8, dtype=torch.float16)
    assert cache.kv_bytes() == 5 * 2048
    assert BlockManager.from_budget(cache.kv_bytes(), 16, 2, 2, 8, torch.float16).num_blocks == 5


def test_same_length_prompts_and_a_one_token_remainder_in_one_step():
    """Two whole 6-token prompts attend as one batch, beside b, whose first 8 tokens hit a's blocks that this very
    step fills: b computes its one remaining token as a decode row, and the mirror copies b's context only
    once a's KV is written."""
    model = tiny_model("LlamaForCausalLM")
    manager, cache = paged(model, num_blocks=16, mirror_bytes=1 << 20)
    g = torch.Generator().manual_seed(3)
    a = torch.randint(1, 64, (11,), generator=g).tolist()
    b = a[:8] + [int(torch.randint(1, 64, (), generator=g))]
    same = [torch.randint(1, 64, (6,), generator=g).tolist() for _ in range(2)]
    work = []
    for tokens in [a, *same]:
        table, _ = manager.allocate(tokens)
        manager.append_slot(table, tokens)
        work.append((table, tokens, 0, len(tokens)))
    table_b, cached = manager.allocate(b)
    assert cached == 8
    manager.append_slot(table_b, b)
    run_step(model, manager, cache, work + [(table_b, b, 8, 9)])
    assert cache.metadata.mirror is not None and [r.shape for r in cache.metadata.fresh] == [(1, 11), (2, 6)]
