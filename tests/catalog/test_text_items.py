"""Cold start by text: an item given as text gets the SID the model's codebooks give its text, and is
recommendable at once, as the reference over the changed catalog says."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from grserve.bundle import GRBundle
from grserve.engine.gr.config import EngineConfig
from grserve.recommender import Recommender
from tests.catalog.oracle import CatalogModel, assert_same_answer, reference_answer

codebooks = pytest.importorskip("grserve.items.codebooks", reason="needs grserve/items/codebooks.py (issue 14, item 3)")


def test_an_item_added_by_text_gets_its_codebook_sid_and_is_recommended(tiny_model_dir, tmp_path):
    from grserve.data.embeddings import ENCODER
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    rng = np.random.default_rng(0)
    codebooks.Codebooks(rng.normal(size=(3, 5, 384)).astype(np.float32) / 10, ENCODER).save(model_dir)
    bundle = GRBundle.load(model_dir)
    text = "a quiet film about a lighthouse keeper"
    sid = tuple(int(c) for c in codebooks.Codebooks.load(model_dir).encode_texts([text])[0])
    rec = Recommender(bundle, EngineConfig(max_beam_width=16, max_batch_rows=64))
    try:
        rec.catalog.add_items([{"item_id": "t1", "text": text, "title": "Lighthouse"}])
        table = rec.catalog.current.table
        assert tuple(table.codes[table.row_of("t1")]) == sid
        model = CatalogModel(bundle.table).add("t1", sid)
        for history in (["i1", "i2"], []):
            got = rec.recommend(history, 5, 16)
            assert_same_answer([(i.item_id, i.score) for i in got.items],
                               reference_answer(bundle, model, history, 5, 16))
        assert [i.item_id for i in rec.recommend([], 1, 16, allow=["t1"]).items] == ["t1"]
    finally:
        rec.close()
