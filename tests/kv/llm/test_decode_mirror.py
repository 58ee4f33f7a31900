"""DecodeMirror: which rows sequences get and what is copied, worked by hand; decode attention read from the
mirror (rows out of order, a row refilled) equals the same attention gathered from the paged store."""

import torch

from grserve.kv.llm.decode_mirror import DecodeMirror
from grserve.kv.llm.paged_kv import PagedKVCache


def mirror(max_bytes: int = 1 << 20) -> DecodeMirror:
    return DecodeMirror(num_layers=1, num_kv_heads=2, head_dim=4, dtype=torch.float32, device=torch.device("cpu"),
                        max_bytes=max_bytes)


def test_rows_are_kept_freed_and_reused_and_only_breaks_copy():
    m = mirror()
    first = m.plan([7, 8], [[0, 1, 2], [5, 6]])
    assert first.rows.tolist() == [0, 1] and first.positions.tolist() == [2, 1] and first.in_order
    assert first.fill_rows == [0, 1] and first.fill_lengths == [2, 1] and first.fill_slots.tolist() == [0, 1, 5]
    assert first.sees[:, 0, 0].tolist() == [[True, True, True], [True, True, False]]
    assert first.capacity == (2, 64)
    # One token more each: nothing to copy.
    assert m.plan([7, 8], [[0, 1, 2, 3], [5, 6, 9]]).fill_rows == []
    # 7 stops decoding: its row 0 goes to newcomer 10; 8 keeps row 1 and grew by one.
    third = m.plan([8, 10], [[5, 6, 9, 11], [20, 21]])
    assert third.rows.tolist() == [1, 0] and not third.in_order and third.fill_rows == [0]
    # 8 verified a draft (three tokens at once, without the mirror): its row is copied again.
    assert m.plan([8, 10], [[5, 6, 9, 11, 12, 13, 14], [20, 21, 22]]).fill_rows == [1]


def test_a_mirror_that_would_not_fit_is_dropped():
    # 2 rows of 64 positions fit; a third row doubles the rows to 4, which does not.
    m = mirror(max_bytes=1 * 2 * 2 * 2 * 64 * 4 * 4)
    assert m.plan([1, 2], [[0], [1]]) is not None
    assert m.plan([1, 2, 3], [[0, 4], [1, 5], [2]]) is None and not m.rows
    again = m.plan([1, 2], [[0, 4, 6], [1, 5, 7]])
    assert again.fill_rows == [0, 1]  # forgotten: both copied afresh


@torch.no_grad()
def test_attention_from_the_mirror_equals_the_gathered_one():
    g = torch.Generator().manual_seed(0)
    caches = [PagedKVCache(1, 8, 4, 2, 4, mirror_bytes=mirror_bytes) for mirror_bytes in (0, 1 << 20)]
    store = torch.randn(caches[0].kv.shape, generator=g)
    for cache in caches:
        cache.kv.copy_(store)
    steps = [  # (seq ids, context slots, new slot of each) — three decode steps; sequence 5 leaves, 9 comes
        ([5, 6], [[0, 1, 2], [8, 9, 10, 11, 12]]),
        ([5, 6], [[0, 1, 2, 3], [8, 9, 10, 11, 12, 13]]),
        ([6, 9], [[8, 9, 10, 11, 12, 13, 14], [16, 17]]),
    ]
    for seq_ids, contexts in steps:
        q = torch.randn(1, 4, 2, 4, generator=g)
        k, v = torch.randn(2, 1, 2, 2, 4, generator=g)
        new = [c[-1] for c in contexts]
        outs = []
        for cache in caches:
            cache.use(cache.plan(new, [0, 1], [len(c) - 1 for c in contexts], contexts, seq_ids))
            outs.append(cache.attend(0, q, k, v))
        assert caches[1].metadata.mirror is not None
        torch.testing.assert_close(outs[1], outs[0])
    assert caches[1].metadata.mirror.rows.tolist() == [1, 0]  # 9 took 5's row 0 in the last step
