"""Node filters against brute force: a node is open iff some item under it survives the filters."""
import random

import pytest

from grserve.beam.candidates import CandidateTables
from grserve.beam.filters import build_filter
from tests.conftest import make_bundle


def open_nodes_oracle(bundle, kept):
    codes = bundle.table.codes.tolist()
    return [{tuple(codes[i][:n]) for i in kept} for n in range(1, bundle.table.levels + 1)]


def node_prefixes(bundle, tables):
    """Prefix of every node per selection level (level-1 nodes, ..., leaves), from the trie's own enumeration."""
    out, prefixes = [], [()]
    for _ in range(bundle.table.levels):
        prefixes = [p + (c,) for p in prefixes for c in bundle.trie.children(p).tolist()]
        out.append(prefixes)
    return out


@pytest.mark.parametrize("levels", [2, 3, 4])
@pytest.mark.parametrize("seed", range(6))
def test_open_nodes_match_brute_force(seed, levels):
    b = make_bundle(num_items=120, codebook_size=4, seed=seed, levels=levels)
    tables = CandidateTables.build(b.trie, b.vocab)
    rng = random.Random(seed)
    n = len(b.table)
    exclude = set(rng.sample(range(n), rng.randrange(0, 90)))
    allow = set(rng.sample(range(n), rng.randrange(1, 40))) if seed % 2 else None
    f = build_filter(tables, exclude, allow)
    kept = (allow if allow is not None else set(range(n))) - exclude
    expected = open_nodes_oracle(b, kept)
    for level, prefixes in enumerate(node_prefixes(b, tables)):
        nodes = set(f.nodes[level].tolist())
        for node, prefix in enumerate(prefixes):
            is_open = (node in nodes) if f.allow else (node not in nodes)
            assert is_open == (prefix in expected[level]), (level, prefix)
    assert all(f.keeps(i) == (i in kept) for i in range(n))


def test_no_filter_is_none(tiny_bundle):
    assert build_filter(CandidateTables.build(tiny_bundle.trie, tiny_bundle.vocab), set(), None) is None
