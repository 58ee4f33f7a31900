"""The reference beam search against exhaustive scoring of every item (an independent oracle)."""
from __future__ import annotations

import pytest
import torch

from grserve.reference import reference_beam_search
from tests.conftest import make_bundle


def exhaustive_scores(bundle, prompt):
    """Score of every item: the sum over its SID's tokens of log p(token | prompt, earlier tokens), each
    normalised over the whole vocabulary; one full forward per item."""
    vocab, scores = bundle.vocab, {}
    for row, codes in enumerate(bundle.table.codes.tolist()):
        tokens = [vocab.offset(l) + c for l, c in enumerate(codes)]
        ids = torch.tensor([prompt + tokens])
        logits, _ = bundle.model(ids, torch.arange(ids.shape[1])[None])
        logp = torch.log_softmax(logits[0].double(), -1)
        scores[row] = sum(logp[len(prompt) - 1 + l, t].item() for l, t in enumerate(tokens))
    return scores


def test_returns_only_valid_items(tiny_bundle):
    b = tiny_bundle
    valid = {tuple(c) for c in b.table.codes.tolist()}
    prompt = b.vocab.prompt(b.table.codes[[3, 7, 11]])
    items = reference_beam_search(b.model, prompt, 4, 30, b.trie, b.vocab)
    assert items
    for it in items:
        assert it.semantic_id in valid
        assert tuple(b.table.codes[it.item]) == it.semantic_id
    assert [i.score for i in items] == sorted((i.score for i in items), reverse=True)


@pytest.mark.parametrize("levels", [2, 3, 4])
def test_full_width_equals_exhaustive_top_n(tiny_bundle, levels):
    b = tiny_bundle if levels == 3 else make_bundle(levels=levels)
    for history, exclude in (([], set()), ([5], {5, 8, 13}), ([2, 9, 4, 17], set(range(0, 60, 2)))):
        prompt = b.vocab.prompt(b.table.codes[history])
        oracle = exhaustive_scores(b, prompt)
        width = b.trie.num_leaves
        top_n = 12
        items = reference_beam_search(b.model, prompt, width, top_n, b.trie, b.vocab, exclude)
        expected = sorted(set(oracle) - exclude, key=lambda r: (-oracle[r], tuple(b.table.codes[r]), r))[:top_n]
        assert [i.item for i in items] == expected
        for it in items:
            assert abs(it.score - oracle[it.item]) < 1e-4  # float32 forwards of different lengths


def test_shared_triple_items_share_the_score(tiny_bundle):
    b = tiny_bundle
    items = reference_beam_search(b.model, b.vocab.prompt(b.table.codes[[4]]), b.trie.num_leaves,
                                  len(b.table), b.trie, b.vocab)
    by_item = {i.item: i.score for i in items}
    assert by_item[0] == by_item[1]  # rows 0 and 1 share a triple in the fixture
    assert len(items) == len(b.table)
