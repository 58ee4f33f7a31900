"""Disabled items as closed nodes, alone and merged with a request's own filters, against brute force: a node
is open to a request iff some item under it is enabled and survives the request's filters."""
import random

import pytest
import torch

from grserve.beam.availability import Availability
from grserve.beam.candidates import CandidateTables
from grserve.beam.filters import build_filter
from tests.beam.test_filters import node_prefixes, open_nodes_oracle
from tests.conftest import make_bundle


def test_nothing_disabled_is_none(tiny_bundle):
    assert Availability.build(CandidateTables.build(tiny_bundle.trie, tiny_bundle.vocab), []) is None


@pytest.mark.parametrize("levels", [2, 3, 4])
@pytest.mark.parametrize("seed", range(8))
def test_disabled_and_request_filters_close_exactly_the_emptied_nodes(seed, levels):
    b = make_bundle(num_items=150, codebook_size=4, seed=seed, levels=levels)
    tables = CandidateTables.build(b.trie, b.vocab)
    rng = random.Random(seed)
    n = len(b.table)
    disabled = set(rng.sample(range(n), rng.randrange(1, 120)))
    exclude = set(rng.sample(range(n), rng.randrange(0, 60)))
    allow = set(rng.sample(range(n), rng.randrange(1, 60))) if seed % 3 == 0 else None
    availability = Availability.build(tables, disabled)
    f = build_filter(tables, exclude, allow, availability)
    kept = (allow if allow is not None else set(range(n))) - exclude - disabled
    expected = open_nodes_oracle(b, kept)
    for level, prefixes in enumerate(node_prefixes(b, tables)):
        nodes = set(f.nodes[level].tolist()) if f is not None else set()
        for node, prefix in enumerate(prefixes):
            by_request = (node in nodes) if f is not None and f.allow else (node not in nodes)
            opened = bool(availability.opens(level, torch.tensor([node]))[0])
            assert (opened and by_request) == (prefix in expected[level]), (level, prefix)
    assert availability.count == len(disabled)
