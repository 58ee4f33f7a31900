"""Candidate tables against the trie's own `children` (and a hand-built node numbering), at any depth."""
import pytest
import torch

from grserve.beam.candidates import CandidateTables
from grserve.items.vocab import GRVocab
from tests.beam.test_filters import node_prefixes
from tests.conftest import make_bundle


@pytest.mark.parametrize("levels", [2, 3, 4])
def test_tables_list_the_trie_children(levels):
    b = make_bundle(levels=levels)
    t = CandidateTables.build(b.trie, b.vocab)
    assert len(t.levels) == levels
    nodes = [[()], *node_prefixes(b, t)]  # level-l node n is the n-th valid prefix of l codes, in code order
    for level in range(levels):
        row = t.levels[level]
        for n, prefix in enumerate(nodes[level]):
            kids = b.trie.children(prefix).tolist()
            children, valid = row.slots(torch.tensor([n]))
            assert int(valid.sum()) == len(kids) and bool(valid[0, :len(kids)].all())
            assert row.tokens(children, valid)[0, :len(kids)].tolist() == [b.vocab.offset(level) + c for c in kids]
            for j, c in enumerate(kids):
                assert nodes[level + 1][int(row.base[n]) + j] == prefix + (c,)
                assert int(t.parent_of[level][int(row.base[n]) + j]) == n
        tok = row.tokens(*row.slots(torch.arange(len(nodes[level]))))  # padding keeps rows sorted
        assert bool((tok[:, 1:] >= tok[:, :-1]).all())
    for leaf, sid in enumerate(nodes[levels]):
        assert t.items_of_leaf(leaf) == b.trie.items_of(*sid)
        assert all(int(t.leaf_of_item[i]) == leaf for i in t.items_of_leaf(leaf))


def test_a_vocabulary_of_another_depth_is_refused(tiny_bundle):
    with pytest.raises(ValueError, match="4 levels for a trie of 3"):
        CandidateTables.build(tiny_bundle.trie, GRVocab(tiny_bundle.vocab.codebook_size, 4))
