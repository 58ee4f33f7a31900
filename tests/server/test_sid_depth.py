"""A GR model of 4-level SIDs over HTTP: /v1/models says its depth, /v1/recommend answers as the reference beam
search (through the catalog oracle, after an item of 4 codes is added), and /v1/completions generates 4 tokens,
the reference's best SIDs, refusing any other max_tokens."""
from __future__ import annotations

import httpx
import pytest

from grserve.recommender import Recommender
from grserve.reference import reference_beam_search
from grserve.server.app import create_app
from grserve.server.config import ServerConfig
from tests.catalog.oracle import CatalogModel, assert_same_answer, reference_answer
from tests.conftest import make_bundle
from tests.server.conftest import running

TOKEN = "depth-admin-token"


@pytest.fixture(scope="module")
def server():
    bundle = make_bundle(num_items=120, codebook_size=5, seed=4, levels=4)
    config = ServerConfig.of(max_beam_width=32, default_timeout_ms=30_000, admin_token=TOKEN)
    recommender = Recommender(bundle, config.engine)
    try:
        with running(create_app(config, recommender)) as url:
            yield url, bundle, recommender
    finally:
        recommender.close()


def test_models_recommend_and_catalog_add(server):
    url, bundle, _ = server
    (model,) = [m for m in httpx.get(url + "/v1/models").json()["data"] if m["kind"] == "generative-recommendation"]
    assert model["levels"] == 4 and model["codebook_size"] == 5
    expected = CatalogModel(bundle.table)
    short = httpx.post(url + "/v1/catalog/items", headers={"Authorization": f"Bearer {TOKEN}"},
                       json={"items": [{"item_id": "new", "semantic_id": [1, 2, 3]}]})
    assert short.status_code == 400 and "must be 4 integer codes" in short.text
    added = httpx.post(url + "/v1/catalog/items", headers={"Authorization": f"Bearer {TOKEN}"},
                       json={"items": [{"item_id": "new", "semantic_id": [1, 2, 3, 4]}]})
    assert added.status_code == 200 and added.json()["semantic_ids"] == len(set(expected.add("new", (1, 2, 3, 4))
                                                                                 .sids.values()))
    for history in ([], ["i3", "new"], ["i7", "i8", "i9"]):
        r = httpx.post(url + "/v1/recommend", json={"history": history, "top_n": 8, "beam_width": 16})
        assert r.status_code == 200
        items = r.json()["items"]
        assert all(len(i["semantic_id"]) == 4 for i in items)
        assert_same_answer([(i["item_id"], i["score"]) for i in items],
                           reference_answer(bundle, expected, history, 8, 16))


def test_completions_generate_one_sid_of_four_tokens(server):
    url, bundle, recommender = server
    prompt = bundle.vocab.prompt(bundle.table.codes[[1, 2]])
    r = httpx.post(url + "/v1/completions", json={"prompt": prompt, "beam_width": 8, "max_tokens": 4, "n": 4})
    assert r.status_code == 200
    body = r.json()
    trie = recommender.catalog.current.trie  # the catalog's, whatever the other test added to it
    ref = reference_beam_search(bundle.model, prompt, 8, 8, trie, bundle.vocab)
    best = list(dict.fromkeys((i.semantic_id, i.score) for i in ref))[:len(body["choices"])]
    assert [tuple(c["semantic_id"]) for c in body["choices"]] == [sid for sid, _ in best]
    assert [c["score"] for c in body["choices"]] == pytest.approx([s for _, s in best], abs=2e-4)
    assert all(c["token_ids"] == [bundle.vocab.offset(l) + code for l, code in enumerate(c["semantic_id"])]
               for c in body["choices"])
    assert body["usage"]["completion_tokens"] == 4 * len(body["choices"])
    bad = httpx.post(url + "/v1/completions", json={"prompt": prompt, "beam_width": 8, "max_tokens": 3})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_tokens"
    assert "exactly 4 tokens" in bad.json()["error"]["message"]
