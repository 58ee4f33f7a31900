"""`grserve import` round trip: a causal LM made here with transformers itself (random weights, saved with
save_pretrained) and a SID map written here (3 levels, and 4), imported and served over HTTP, answers as the
reference beam search run on the transformers model (the trie built from the map itself, the scores
transformers' log-probabilities); a model whose vocabulary or special tokens do not fit the map is refused,
naming what is wrong."""
from __future__ import annotations

import json
from collections import Counter

import httpx
import numpy as np
import pytest
import torch

from grserve.cli import main
from grserve.items.item_table import ItemTable
from grserve.items.trie import SIDTrie
from grserve.items.vocab import GRVocab
from grserve.reference import reference_beam_search
from grserve.server.app import create_app
from grserve.server.config import ServerConfig
from tests.conftest import make_hf
from tests.server.conftest import running

K, LEVELS, ITEMS = 8, 3, 50


class HFAsGrserve(torch.nn.Module):
    """A transformers causal LM called as the reference beam search calls a grserve model."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, ids, positions):
        return self.hf(input_ids=ids, position_ids=positions).logits, None


def write_map(path, codes: np.ndarray, header: bool = True) -> list[str]:
    ids = [f"sku-{n}" for n in range(len(codes))]
    rows = ([",".join(["item_id", *(f"c{l}" for l in range(codes.shape[1])), "title"])] if header else []) + \
        [",".join([i, *map(str, c), f"Title {n}"]) for n, (i, c) in enumerate(zip(ids, codes.tolist()))]
    path.write_text("\n".join(rows) + "\n")
    return ids


def map_codes(seed: int = 0, levels: int = LEVELS) -> np.ndarray:
    codes = np.random.default_rng(seed).integers(0, K, size=(ITEMS, levels))
    codes[1] = codes[0]  # two items share a SID, as the catalog allows
    return codes


def grserve_import(*args: str) -> None:
    main(["import", *args])


@pytest.mark.parametrize("architecture,levels", [("LlamaForCausalLM", 3), ("Qwen3ForCausalLM", 3),
                                                 ("LlamaForCausalLM", 4)])
def test_an_imported_model_serves_what_transformers_computes(architecture, levels, tmp_path, capsys):
    hf = make_hf(tmp_path / "hf", architecture, 3 + levels * K, **({"tie_word_embeddings": True}
                                                  if architecture == "Qwen3ForCausalLM" else {}))
    codes = map_codes(levels=levels)
    ids = write_map(tmp_path / "map.csv", codes)
    grserve_import("--hf-model", str(tmp_path / "hf"), "--sid-map", str(tmp_path / "map.csv"),
                   "--out", str(tmp_path / "gr"))
    report = json.loads(capsys.readouterr().out)
    per_sid = Counter(map(tuple, codes.tolist()))
    shared = sum(n for n in per_sid.values() if n > 1)
    assert shared >= 2 and (report["items"], report["levels"], report["codebook_size"], report["shared_sids"]) == (
        ITEMS, levels, K, shared)

    # the oracle: transformers' model over the map's own trie, in grserve's token layout
    table = ItemTable(K, codes, ids)
    trie, vocab, oracle = SIDTrie.from_table(table), GRVocab(K, levels), HFAsGrserve(hf)
    config = ServerConfig.of(model=str(tmp_path / "gr"), max_beam_width=16, default_timeout_ms=30_000)
    with running(create_app(config)) as url:
        for history in (["sku-3", "sku-7"], ["sku-0"], []):
            r = httpx.post(url + "/v1/recommend", json={"history": history, "top_n": 6, "beam_width": 16}, timeout=60)
            assert r.status_code == 200, r.text
            rows = [ids.index(h) for h in history]
            want = reference_beam_search(oracle, vocab.prompt(codes[rows]), 16, 6, trie, vocab, exclude=set(rows))
            got = r.json()["items"]
            assert [i["item_id"] for i in got] == [ids[w.item] for w in want]
            assert [i["score"] for i in got] == pytest.approx([w.score for w in want], abs=1e-4)
            assert got[0]["title"] == f"Title {ids.index(got[0]['item_id'])}"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf-llama")
    make_hf(directory, "LlamaForCausalLM", 3 + LEVELS * K)
    return directory


def refused(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["import", *args])
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_a_vocabulary_too_small_for_the_codes_is_refused(tmp_path, capsys):
    make_hf(tmp_path / "hf", "LlamaForCausalLM", 3 + LEVELS * 4)  # a codebook of 4 per level
    codes = map_codes() % 4
    codes[5, 0] = 7
    write_map(tmp_path / "map.csv", codes)  # row 5 on line 7, below the header
    err = refused(capsys, "--hf-model", str(tmp_path / "hf"), "--sid-map", str(tmp_path / "map.csv"),
                  "--out", str(tmp_path / "gr"))
    assert "map.csv line 7: c0: code 7 is outside the codebook [0, 4)" in err
    assert "vocab_size 15 = 3 special tokens + 3 levels × 4 codes" in err and "codebook of 8 or more" in err
    assert not (tmp_path / "gr").exists()


def test_a_vocabulary_that_does_not_split_into_the_levels_is_refused(tmp_path, capsys):
    make_hf(tmp_path / "hf", "LlamaForCausalLM", 3 + LEVELS * K + 1)
    write_map(tmp_path / "map.csv", map_codes())
    err = refused(capsys, "--hf-model", str(tmp_path / "hf"), "--sid-map", str(tmp_path / "map.csv"),
                  "--out", str(tmp_path / "gr"))
    assert "config.json: vocab_size 28 is not 3 special tokens + 3 levels" in err
    assert "does not split into 3 equal ranges" in err


def test_special_tokens_elsewhere_are_refused(tmp_path, capsys):
    make_hf(tmp_path / "hf", "LlamaForCausalLM", 3 + LEVELS * K, bos_token_id=5)
    write_map(tmp_path / "map.csv", map_codes())
    err = refused(capsys, "--hf-model", str(tmp_path / "hf"), "--sid-map", str(tmp_path / "map.csv"),
                  "--out", str(tmp_path / "gr"))
    assert "bos_token_id is 5, but a GR model's vocabulary has it at 1" in err


def test_a_history_longer_than_the_context_is_refused(llama_dir, tmp_path, capsys):
    write_map(tmp_path / "map.csv", map_codes())
    err = refused(capsys, "--hf-model", str(llama_dir), "--sid-map", str(tmp_path / "map.csv"),
                  "--out", str(tmp_path / "gr"), "--max-history-items", "50")
    # 128 positions hold <bos> + 3 codes per item + the 3 decoded: (128 - 1) // 3 - 1 = 41 items
    assert "--max-history-items 50: max_position_embeddings 128 holds 41 items" in err
