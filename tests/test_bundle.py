"""A GR model directory round-trips: same table, same trie, same logits."""
import json

import numpy as np
import pytest
import torch

from grserve.bundle import GRBundle
from tests.conftest import make_bundle


def test_save_load_round_trip(tiny_bundle, tiny_model_dir):
    loaded = GRBundle.load(tiny_model_dir)
    assert np.array_equal(loaded.table.codes, tiny_bundle.table.codes)
    assert loaded.table.raw_ids == tiny_bundle.table.raw_ids
    assert loaded.settings == tiny_bundle.settings
    assert all(torch.equal(a, b) for a, b in zip(loaded.trie.codes, tiny_bundle.trie.codes))
    ids = torch.tensor([[1, 4, 9, 14]])
    pos = torch.arange(4)[None]
    assert torch.allclose(loaded.model(ids, pos)[0], tiny_bundle.model(ids, pos)[0], atol=1e-6)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="gr_config.json"):
        GRBundle.load(tmp_path)


def test_vocab_mismatch_is_reported(tiny_model_dir, tmp_path):
    import shutil
    shutil.copytree(tiny_model_dir, tmp_path / "m")
    items = json.loads((tmp_path / "m" / "items.json").read_text())
    items["codebook_size"] += 1
    (tmp_path / "m" / "items.json").write_text(json.dumps(items))
    with pytest.raises(ValueError, match="vocab_size"):
        GRBundle.load(tmp_path / "m")


def test_a_four_level_model_directory_round_trips(tmp_path):
    """The depth comes from the item table: the loaded vocabulary and trie have its 4 levels."""
    bundle = make_bundle(num_items=40, codebook_size=4, seed=1, levels=4)
    bundle.save(tmp_path)
    loaded = GRBundle.load(tmp_path)
    assert loaded.table.levels == loaded.vocab.levels == loaded.trie.levels == 4
    assert np.array_equal(loaded.table.codes, bundle.table.codes) and loaded.vocab == bundle.vocab


def test_a_table_of_another_depth_than_the_model_is_reported(tiny_model_dir, tmp_path):
    """A 4-level items file beside a model trained on 3-level SIDs: the vocabularies differ by a level."""
    import shutil
    shutil.copytree(tiny_model_dir, tmp_path / "m")
    make_bundle(levels=4).table.save(tmp_path / "m")
    with pytest.raises(ValueError, match="vocab_size 18 does not match .* 23 tokens .*4 levels of 5 codes"):
        GRBundle.load(tmp_path / "m")



def test_model_directory_takes_paths_first_then_shipped_names(tmp_path, monkeypatch):
    from pathlib import Path

    from grserve.bundle import DEFAULT_MODEL_DIR, EMBEDDED_MODELS_DIR, model_directory
    assert model_directory(None) == DEFAULT_MODEL_DIR == EMBEDDED_MODELS_DIR / "ml-100k"
    assert model_directory("ml-100k") == DEFAULT_MODEL_DIR
    assert (model_directory("beauty") / "gr_config.json").exists()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "beauty").mkdir()  # a directory of that name here is the user's, not the package's
    assert model_directory("beauty") == Path("beauty")
    assert model_directory("no-such-model") == Path("no-such-model")  # loading it then says what is missing


def test_the_shipped_beauty_model_loads_whole():
    from grserve.bundle import model_directory
    from grserve.items.codebooks import Codebooks
    b = GRBundle.load("beauty")
    assert b.directory == model_directory("beauty") and b.settings.dataset == "Beauty"
    assert len(b.table) == 12101 and (b.vocab.levels, b.vocab.codebook_size) == (3, 256)
    assert len(b.table.titles) == 12101 and b.model.config.vocab_size == b.vocab.size
    assert Codebooks.load(b.directory).centroids.shape[:2] == (3, 256)  # items can be added by text
