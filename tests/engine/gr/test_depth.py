"""SIDs of any depth: on catalogs of 2 and 4 levels the engine equals the reference beam search (same items, same
scores) at beam widths 1 to 64, with the separated and the expanded KV cache, with exclude and allow filters and
with a catalog version's disabled items; a 1-level table is refused."""
from __future__ import annotations

import random

import numpy as np
import pytest

from grserve.catalog.snapshot import CatalogSnapshot
from grserve.engine.gr.config import EngineConfig
from grserve.engine.gr.engine import GREngine
from grserve.engine.gr.request import GRRequest
from grserve.items.item_table import ItemTable
from tests.conftest import make_bundle
from tests.engine.gr.test_engine import assert_matches_reference

WIDTHS = (1, 4, 16, 64)
CODEBOOK = {2: 16, 4: 5}  # 256 and 625 possible SIDs for 300 items: shared prefixes, some SIDs shared by items


def depth_cases(bundle, rng: random.Random, catalog: CatalogSnapshot | None) -> list[GRRequest]:
    """Per width: no filter, an exclude list, an allow list; prompts are histories of the bundle's own SIDs."""
    n, cases = len(bundle.table), []
    for width in WIDTHS:
        for kind in ("none", "exclude", "allow"):
            history = rng.sample(range(n), rng.randint(0, 12))
            exclude = set(history) | (set(rng.sample(range(n), n // 4)) if kind == "exclude" else set())
            allow = set(rng.sample(range(n), n // 3)) if kind == "allow" else None
            cases.append(GRRequest(bundle.vocab.prompt(bundle.table.codes[history]), width, min(width, 10),
                                   exclude, allow, catalog=catalog))
    return cases


@pytest.mark.parametrize("separated_kv", [True, False], ids=["separated-kv", "expanded-kv"])
@pytest.mark.parametrize("levels", [2, 4])
def test_engine_equals_reference_at_any_depth(levels, separated_kv):
    bundle = make_bundle(num_items=300, codebook_size=CODEBOOK[levels], seed=levels, levels=levels)
    assert bundle.vocab.levels == bundle.trie.levels == levels
    engine = GREngine(bundle, EngineConfig(max_beam_width=64, max_batch_rows=256, max_batch_prompt_tokens=4096,
                                           separated_kv=separated_kv))
    rng = random.Random(levels)
    # A later catalog version with 60 items disabled (out of stock): closed to every request on it.
    disabled = CatalogSnapshot.build(1, bundle.table, frozenset(rng.sample(range(300), 60)), bundle.trie)
    try:
        assert_matches_reference(bundle, engine, depth_cases(bundle, rng, None) + depth_cases(bundle, rng, disabled))
        kv = engine.runner.kv
        assert kv.max_steps == levels - 1 and kv.step == levels - 1  # L - 1 decode rounds, every one used
    finally:
        engine.shutdown()


@pytest.mark.parametrize("separated,expected", [(True, lambda p, w, r: p + r * w), (False, lambda p, w, r: w * (p + r))])
@pytest.mark.parametrize("levels", [2, 4])
def test_kv_holds_one_token_per_decode_round(levels, separated, expected):
    """From the engine's own accounting: L - 1 decode tokens per beam (separated: prompt once; expanded: per beam)."""
    bundle = make_bundle(num_items=400, codebook_size=CODEBOOK[levels], seed=5, levels=levels)
    engine = GREngine(bundle, EngineConfig(max_beam_width=16, max_batch_rows=16, separated_kv=separated))
    prompt = bundle.vocab.prompt(bundle.table.codes[:30])
    assert len(bundle.trie.codes[levels - 2]) >= 16  # enough prefixes of L - 1 codes for 16 beams in the last round
    try:
        assert len(engine.submit(GRRequest(prompt, 16, 5)).result(timeout=60).items) == 5
        tokens = engine.runner.kv.kv_tokens()
        assert tokens["shared"] + tokens["unshared"] == expected(len(prompt), 16, levels - 1)
    finally:
        engine.shutdown()


def test_a_one_level_table_is_refused():
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        ItemTable(4, np.zeros((3, 1), dtype=np.int32), ["a", "b", "c"])
