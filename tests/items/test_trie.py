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
    assert trie.first_codes.tolist() == [0, 2]
    assert trie.l1_indptr.tolist() == [0, 2, 2, 3]
    assert trie.l1_codes.tolist() == [1, 2, 0]
    # Pair index c0*3 + c1: (0,1)=1 -> {0, 2}, (0,2)=2 -> {1}, (2,0)=6 -> {0}.
    assert trie.l2_indptr.tolist() == [0, 0, 2, 3, 3, 3, 3, 4, 4, 4]
    assert trie.l2_codes.tolist() == [0, 2, 1, 0]
    assert trie.item_indptr.tolist() == [0, 1, 2, 4, 5]
    assert trie.item_rows.tolist() == [4, 2, 1, 3, 0]
    assert trie.num_triples == 4
    assert trie.items_of(0, 2, 1) == [1, 3]
    assert trie.leaf_index(2, 0, 0) == 3
    assert trie.leaf_index(1, 0, 0) is None
    for t in (trie.first_codes, trie.l1_indptr, trie.l1_codes, trie.l2_indptr, trie.l2_codes,
              trie.item_indptr, trie.item_rows):
        assert t.dtype == torch.int64


@pytest.mark.parametrize("n, k, seed", [(500, 8, 0), (300, 5, 1), (1, 4, 2), (400, 16, 3)])
def test_matches_path_oracle_exhaustively(n, k, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k, size=(n, 3)).astype(np.int32)
    trie = SIDTrie.build(codes, k)

    items: dict[tuple[int, int, int], list[int]] = {}
    for row, triple in enumerate(codes.tolist()):
        items.setdefault(tuple(triple), []).append(row)
    prefixes = {t[:length] for t in items for length in range(3)}

    def expected_children(prefix):
        return sorted({t[len(prefix)] for t in items if t[: len(prefix)] == prefix})

    assert trie.children(()).tolist() == expected_children(())
    for length in (1, 2):
        for prefix in itertools.product(range(k), repeat=length):
            got = trie.children(prefix).tolist()
            assert got == expected_children(prefix)
            assert (len(got) > 0) == (prefix in prefixes)
    leaves = set()
    for triple in itertools.product(range(k), repeat=3):
        assert trie.items_of(*triple) == items.get(triple, [])
        leaf = trie.leaf_index(*triple)
        assert (leaf is None) == (triple not in items)
        if leaf is not None:
            assert int(trie.l2_codes[leaf]) == triple[2]
            leaves.add(leaf)
    assert sorted(leaves) == list(range(trie.num_triples)) and trie.num_triples == len(items)
    # Every item appears exactly once among the leaves.
    assert sorted(trie.item_rows.tolist()) == list(range(n))
    assert len(trie.l1_indptr) == k + 1 and len(trie.l2_indptr) == k * k + 1
    assert len(trie.item_indptr) == trie.num_triples + 1


def test_every_item_is_a_path():
    k = 8
    codes = np.random.default_rng(7).integers(0, k, size=(500, 3))
    trie = SIDTrie.build(codes, k)
    for row, (c0, c1, c2) in enumerate(codes.tolist()):
        assert c0 in trie.children(()).tolist()
        assert c1 in trie.children((c0,)).tolist()
        assert c2 in trie.children((c0, c1)).tolist()
        assert row in trie.items_of(c0, c1, c2)


def test_out_of_range_prefixes_are_invalid_not_wrapped():
    trie = SIDTrie.build(np.array([[3, 3, 3]]), codebook_size=4)
    assert trie.children((-1,)).numel() == 0
    assert trie.children((4,)).numel() == 0
    assert trie.children((3, -1)).numel() == 0
    assert trie.leaf_index(3, 3, -1) is None and trie.leaf_index(3, 3, 4) is None
    assert trie.items_of(-1, 3, 3) == []
    with pytest.raises(ValueError, match="at most 2"):
        trie.children((3, 3, 3))


def test_build_rejects_bad_codes():
    with pytest.raises(ValueError, match="shape"):
        SIDTrie.build(np.zeros((4, 2)), 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        SIDTrie.build(np.array([[0, 4, 0]]), 4)


def test_empty_catalog():
    trie = SIDTrie.build(np.zeros((0, 3), dtype=np.int32), 4)
    assert trie.num_triples == 0 and trie.children(()).numel() == 0
    assert trie.items_of(0, 0, 0) == []


def test_from_table_and_to_device():
    table = ItemTable(4, np.array([[1, 2, 3], [1, 2, 3], [0, 0, 0]]), ["a", "b", "c"])
    trie = SIDTrie.from_table(table)
    assert trie.items_of(1, 2, 3) == [0, 1]
    moved = trie.to("cpu")
    assert moved is not trie and moved.codebook_size == 4
    assert torch.equal(moved.l2_codes, trie.l2_codes) and moved.items_of(0, 0, 0) == [2]
    meta = torch.device("meta")
    assert trie.to(meta).item_rows.device == meta
