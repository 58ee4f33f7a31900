"""Candidate tables against the trie's own `children` (and a hand-built node numbering)."""
from grserve.beam.candidates import CandidateTables


def test_tables_list_the_trie_children(tiny_bundle):
    b = tiny_bundle
    t = CandidateTables.build(b.trie, b.vocab)
    root = t.levels[0]
    firsts = b.trie.children(()).tolist()
    assert root.tokens[0, :root.degree[0]].tolist() == [b.vocab.offset(0) + c for c in firsts]
    pairs = [(c0, c1) for c0 in firsts for c1 in b.trie.children((c0,)).tolist()]
    leaves = [(c0, c1, c2) for c0, c1 in pairs for c2 in b.trie.children((c0, c1)).tolist()]
    for n, c0 in enumerate(firsts):  # level-1 node n is the n-th valid c0
        kids = b.trie.children((c0,)).tolist()
        row = t.levels[1]
        assert row.tokens[n, :row.degree[n]].tolist() == [b.vocab.offset(1) + c for c in kids]
        for j, c1 in enumerate(kids):
            assert pairs[int(row.base[n]) + j] == (c0, c1)
    for m, (c0, c1) in enumerate(pairs):  # level-2 node m is the m-th valid pair
        kids = b.trie.children((c0, c1)).tolist()
        row = t.levels[2]
        assert row.tokens[m, :row.degree[m]].tolist() == [b.vocab.offset(2) + c for c in kids]
        for j, c2 in enumerate(kids):
            leaf = int(row.base[m]) + j
            assert leaves[leaf] == (c0, c1, c2)
            assert t.items_of_leaf(leaf) == b.trie.items_of(c0, c1, c2)
    for level in range(3):  # padding keeps rows sorted
        tok = t.levels[level].tokens
        assert bool((tok[:, 1:] >= tok[:, :-1]).all())
