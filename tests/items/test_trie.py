"""SIDTrie against hand-worked tables and against Python set/dict oracles built path by path."""

import itertools

import numpy as np
import pytest
import torch

from grserve.items import ItemTable, SIDTrie


def test_hand_worked_tables():
    # K=3. Rows 1 and 3 collide on (0, 2, 1); c0=1 is unused.
    codes = np.array([[2, 0, 0], [0, 2, 1], [0, 1, 2], [0, 2, 1], [0, 1, 0]])
    trie = SIDTrie.build(codes, codebook_size=3)
    assert trie.levels == 3
    assert [t.tolist() for t in trie.codes] == [[0, 2], [1, 2, 0], [0, 2, 1, 0]]
    # Children by node: the root has c0 0 and 2; node 0 (c0=0) has (0,1), (0,2), node 1 (c0=2) has (2,0); the
    # pair nodes (0,1), (0,2), (2,0) have 2, 1 and 1 leaves.
    assert [t.tolist() for t in trie.indptr] == [[0, 2], [0, 2, 3], [0, 2, 3, 4]]
    assert trie.item_indptr.tolist() == [0, 1, 2, 4, 5]
    assert trie.item_rows.tolist() == [4, 2, 1, 3, 0]
    assert trie.num_leaves == 4
    assert trie.items_of(0, 2, 1) == [1, 3]
    assert trie.leaf_index(2, 0, 0) == 3
    assert trie.leaf_index(1, 0, 0) is None
    for t in (*trie.codes, *trie.indptr, trie.item_indptr, trie.item_rows):
        assert t.dtype == torch.int64


def test_hand_worked_two_levels():
    trie = SIDTrie.build(np.array([[1, 0], [0, 2], [1, 0]]), codebook_size=3)
    assert [t.tolist() for t in trie.codes] == [[0, 1], [2, 0]]
    assert [t.tolist() for t in trie.indptr] == [[0, 2], [0, 1, 2]]
    assert trie.item_indptr.tolist() == [0, 1, 3] and trie.item_rows.tolist() == [1, 0, 2]
    assert trie.children((1,)).tolist() == [0] and trie.items_of(1, 0) == [0, 2] and trie.leaf_index(0, 2) == 0


@pytest.mark.parametrize("n, k, seed, levels", [(500, 8, 0, 3), (300, 5, 1, 3), (1, 4, 2, 3), (400, 16, 3, 3),
                                                (300, 5, 4, 4), (200, 6, 5, 2), (1, 3, 6, 4), (400, 4, 7, 5)])
def test_matches_path_oracle_exhaustively(n, k, seed, levels):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k, size=(n, levels)).astype(np.int32)
    trie = SIDTrie.build(codes, k)

    items: dict[tuple[int, ...], list[int]] = {}
    for row, sid in enumerate(codes.tolist()):
        items.setdefault(tuple(sid), []).append(row)
    prefixes = {t[:length] for t in items for length in range(levels)}

    def expected_children(prefix):
        return sorted({t[len(prefix)] for t in items if t[: len(prefix)] == prefix})

    assert trie.children(()).tolist() == expected_children(())
    for length in range(1, levels):
        for prefix in itertools.product(range(k), repeat=length):
            got = trie.children(prefix).tolist()
            assert got == expected_children(prefix)
            assert (len(got) > 0) == (prefix in prefixes)
    leaves = set()
    for sid in itertools.product(range(k), repeat=levels):
        assert trie.items_of(*sid) == items.get(sid, [])
        leaf = trie.leaf_index(*sid)
        assert (leaf is None) == (sid not in items)
        if leaf is not None:
            assert int(trie.codes[-1][leaf]) == sid[-1]
            leaves.add(leaf)
    assert sorted(leaves) == list(range(trie.num_leaves)) and trie.num_leaves == len(items)
    # Every item appears exactly once among the leaves.
    assert sorted(trie.item_rows.tolist()) == list(range(n))
    # Tables are indexed by node, so they are catalog-sized at any depth (never K**level entries).
    assert len(trie.indptr[0]) == 2
    assert all(len(trie.indptr[l]) == len(trie.codes[l - 1]) + 1 for l in range(1, levels))
    assert len(trie.item_indptr) == trie.num_leaves + 1


def test_huge_codebooks_sort_by_sid():
    """K**levels * N past int64: the trie orders SIDs by lexsort, with the same tables."""
    k, rng = 2**16, np.random.default_rng(9)
    codes = rng.integers(0, 4, size=(300, 4)) * (k // 4) + rng.integers(0, 2, size=(300, 4))
    trie = SIDTrie.build(codes, k)
    distinct = sorted({tuple(c) for c in codes.tolist()})
    prefixes = [()]
    for _ in range(4):
        prefixes = [p + (c,) for p in prefixes for c in trie.children(p).tolist()]
    assert prefixes == distinct
    for row, sid in enumerate(codes.tolist()):
        assert row in trie.items_of(*sid)
    assert trie.item_rows.tolist() == sorted(range(300), key=lambda r: (tuple(codes[r]), r))


@pytest.mark.parametrize("levels", [2, 3, 4])
def test_every_item_is_a_path(levels):
    k = 8
    codes = np.random.default_rng(7).integers(0, k, size=(500, levels))
    trie = SIDTrie.build(codes, k)
    for row, sid in enumerate(codes.tolist()):
        for length in range(levels):
            assert sid[length] in trie.children(tuple(sid[:length])).tolist()
        assert row in trie.items_of(*sid)


def test_out_of_range_prefixes_are_invalid_not_wrapped():
    trie = SIDTrie.build(np.array([[3, 3, 3]]), codebook_size=4)
    assert trie.children((-1,)).numel() == 0
    assert trie.children((4,)).numel() == 0
    assert trie.children((3, -1)).numel() == 0
    assert trie.leaf_index(3, 3, -1) is None and trie.leaf_index(3, 3, 4) is None
    assert trie.items_of(-1, 3, 3) == []
    with pytest.raises(ValueError, match="at most 2"):
        trie.children((3, 3, 3))
    with pytest.raises(ValueError, match="a SID has 3 codes"):
        trie.items_of(3, 3)


def test_build_rejects_bad_codes():
    with pytest.raises(ValueError, match="shape"):
        SIDTrie.build(np.zeros((4, 1)), 4)
    with pytest.raises(ValueError, match="shape"):
        SIDTrie.build(np.zeros(4), 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        SIDTrie.build(np.array([[0, 4, 0]]), 4)


def test_empty_catalog():
    trie = SIDTrie.build(np.zeros((0, 3), dtype=np.int32), 4)
    assert trie.num_leaves == 0 and trie.children(()).numel() == 0
    assert trie.items_of(0, 0, 0) == []


def test_from_table_and_to_device():
    table = ItemTable(4, np.array([[1, 2, 3], [1, 2, 3], [0, 0, 0]]), ["a", "b", "c"])
    trie = SIDTrie.from_table(table)
    assert trie.items_of(1, 2, 3) == [0, 1]
    moved = trie.to("cpu")
    assert moved is not trie and moved.codebook_size == 4
    assert all(torch.equal(a, b) for a, b in zip(moved.codes, trie.codes)) and moved.items_of(0, 0, 0) == [2]
    meta = torch.device("meta")
    assert trie.to(meta).item_rows.device == meta
