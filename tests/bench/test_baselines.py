"""The HF baseline against the reference beam search (vLLM's needs its own venv, which CI does not have)."""
import threading

import pytest

from grserve.bench.baselines import HFBeamSearch, sid_of
from grserve.engine.compute_threads import run_compute
from grserve.items.vocab import GRVocab
from grserve.reference import reference_beam_search

TOP_N = 8


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    baseline = HFBeamSearch(tiny_model_dir)
    baseline.start()
    yield baseline
    baseline.close()


def reference_triples(bundle, prompt: list[int], beam_width: int) -> list[tuple[tuple[int, int, int], float]]:
    """The reference's best TOP_N triples: its items deduplicated by triple (colliding items share one)."""
    items = reference_beam_search(bundle.model, prompt, beam_width, len(bundle.table), bundle.trie, bundle.vocab)
    triples = {}
    for item in items:
        triples.setdefault(item.semantic_id, item.score)
    return list(triples.items())[:TOP_N]


def test_constrained_hf_matches_reference_when_exhaustive(hf, tiny_bundle):
    bundle = tiny_bundle
    beam_width = bundle.trie.num_leaves  # every valid triple survives: both searches are exact
    prompts = [bundle.vocab.prompt(bundle.table.codes[rows]) for rows in ([3, 7, 11], [20, 5, 42, 8, 13])]
    rankings = hf.rank(prompts, beam_width, TOP_N)
    assert len(rankings) == len(prompts)
    for prompt, ranking in zip(prompts, rankings):
        expected = reference_triples(bundle, prompt, beam_width)
        assert [sid for sid, _ in ranking] == [sid for sid, _ in expected]
        assert [score for _, score in ranking] == pytest.approx([s for _, s in expected], abs=1e-4)
        assert all(bundle.trie.leaf_index(*sid) is not None for sid, _ in ranking)


def test_sid_of_marks_tokens_of_the_wrong_level():
    vocab = GRVocab(codebook_size=4, levels=3)  # levels start at tokens 3, 7, 11
    assert sid_of([3, 8, 14], vocab) == (0, 1, 3)
    assert sid_of([8, 8, 2], vocab) == (-1, 1, -1)
    assert sid_of([15, 3], vocab) == (-1, -1, -1)


def test_hf_computes_on_the_engines_compute_thread(hf, tiny_bundle):
    """A baseline on a thread of its own would leave an OpenMP team there that slows the engines' forwards."""
    seen = []
    hook = hf.model.register_forward_pre_hook(lambda *_: seen.append(threading.current_thread()))
    try:
        hf.rank([tiny_bundle.vocab.prompt(tiny_bundle.table.codes[[3, 7]])], 4, 2)
    finally:
        hook.remove()
    assert seen and set(seen) == {run_compute(threading.current_thread)}
    assert seen[0] is not threading.current_thread()
