"""Recommender: dataset item ids in, items out; checked against the reference beam search."""
from grserve.recommender import Recommender
from grserve.reference import reference_beam_search


def test_matches_reference_and_excludes_history(tiny_bundle):
    b, rec = tiny_bundle, Recommender(tiny_bundle)
    history = ["i3", "i8", "i0"]
    out = rec.recommend(history, top_n=5, beam_width=b.trie.num_leaves)
    ref = reference_beam_search(b.model, b.vocab.prompt(b.table.codes[[3, 8, 0]]), b.trie.num_leaves,
                                len(b.table), b.trie, b.vocab)
    expected = [i for i in ref if b.table.raw_ids[i.item] not in history][:5]
    assert [i.item_id for i in out.items] == [b.table.raw_ids[i.item] for i in expected]
    for got, want in zip(out.items, expected):
        assert abs(got.score - want.score) < 1e-4
        assert tuple(got.semantic_id) == want.semantic_id
        assert got.title == b.table.titles[want.item]
    assert out.warnings == []
    assert out.prompt_tokens == 1 + 3 * 3


def test_unknown_ids_warn_and_empty_history_is_allowed(tiny_bundle):
    rec = Recommender(tiny_bundle)
    out = rec.recommend(["i1", "nope", "42"], top_n=3, beam_width=8)
    assert len(out.items) == 3
    assert any("nope" in w and "42" in w for w in out.warnings)
    prior = rec.recommend([], top_n=4, beam_width=8)
    assert len(prior.items) == 4 and prior.prompt_tokens == 1


def test_long_history_is_truncated_with_a_warning(tiny_bundle):
    rec = Recommender(tiny_bundle)
    out = rec.recommend([f"i{n % 60}" for n in range(50)], top_n=2, beam_width=4, exclude_history=False)
    assert out.prompt_tokens == 1 + 3 * tiny_bundle.settings.max_history_items
    assert any("truncated" in w for w in out.warnings)


def test_fewer_items_than_asked_is_a_warning(tiny_bundle):
    rec = Recommender(tiny_bundle)
    everything = [f"i{n}" for n in range(60)]
    out = rec.recommend(everything[:-2], top_n=5, beam_width=tiny_bundle.trie.num_leaves)
    assert {i.item_id for i in out.items} <= {"i58", "i59"}
    assert any("only" in w for w in out.warnings)
