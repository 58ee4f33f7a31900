"""Packed beam rows: a narrow request beside a wide one computes only its own rows, with the reference beam
search's answers."""
import random

import pytest

from grserve.engine.gr.config import EngineConfig
from grserve.engine.gr.model_runner import GRModelRunner
from grserve.engine.gr.request import GRRequest
from grserve.reference import reference_beam_search
from tests.conftest import make_bundle


@pytest.mark.parametrize("separated_kv", [True, False])
def test_mixed_widths_are_packed_and_equal_the_reference(separated_kv):
    bundle = make_bundle(num_items=3000, codebook_size=16, seed=11)
    # 256 + 8 + 1 rows fit a 300-row step; padded to the widest they would be 768
    runner = GRModelRunner(bundle, EngineConfig(max_beam_width=256, max_batch_rows=300, separated_kv=separated_kv))
    rng = random.Random(0)
    requests = [GRRequest([1] + [rng.randrange(3, bundle.vocab.size) for _ in range(n)], w, min(w, 20))
                for w, n in ((8, 40), (256, 12), (1, 25))]
    beams = runner.run(runner.prepare(requests))
    assert runner.kv.rows <= 8 + 256 + 1
    for r, leaves, scores in zip(requests, beams.leaves, beams.scores):
        ref = reference_beam_search(bundle.model, r.prompt, r.beam_width, len(bundle.table), bundle.trie,
                                    bundle.vocab)
        beams_ref = list(dict.fromkeys((bundle.trie.leaf_index(*i.semantic_id), i.score) for i in ref))
        assert leaves == [leaf for leaf, _ in beams_ref]  # every live beam, best first
        assert scores == pytest.approx([score for _, score in beams_ref], abs=2e-4)
