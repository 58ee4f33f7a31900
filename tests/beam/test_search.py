"""Batched KV-cached beam search against the reference (recompute-everything) beam search."""
from __future__ import annotations

import pytest

from grserve.beam.search import beam_search
from grserve.reference import reference_beam_search


@pytest.mark.parametrize("width", [1, 3, 8, 40])
def test_matches_reference_on_mixed_prompt_lengths(tiny_bundle, width):
    b = tiny_bundle
    histories = [[], [1], [5, 6, 7, 8, 9, 10, 11], [20, 3], list(range(30, 45))]
    prompts = [b.vocab.prompt(b.table.codes[h]) for h in histories]
    results = beam_search(b.model, prompts, width, b.trie, b.vocab)
    assert len(results) == len(prompts)
    for prompt, beams in zip(prompts, results):
        # One item per triple is enough to compare triples: ask the reference for every item.
        ref = reference_beam_search(b.model, prompt, width, len(b.table), b.trie, b.vocab)
        ref_triples, seen = [], set()
        for it in ref:
            if it.semantic_id not in seen:
                seen.add(it.semantic_id)
                ref_triples.append((it.semantic_id, it.score))
        assert len(beams.codes) == len(ref_triples) == min(width, b.trie.num_triples)
        for (codes, score), (ref_codes, ref_score) in zip(zip(beams.codes.tolist(), beams.scores.tolist()),
                                                          ref_triples):
            assert tuple(codes) == ref_codes
            assert score == pytest.approx(ref_score, abs=1e-4)


def test_beams_are_valid_paths(tiny_bundle):
    b = tiny_bundle
    valid = {tuple(c) for c in b.table.codes.tolist()}
    (beams,) = beam_search(b.model, [b.vocab.prompt(b.table.codes[[2, 3]])], 16, b.trie, b.vocab)
    assert all(tuple(c) in valid for c in beams.codes.tolist())
    assert beams.scores.tolist() == sorted(beams.scores.tolist(), reverse=True)
