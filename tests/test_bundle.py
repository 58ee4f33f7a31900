"""A GR model directory round-trips: same table, same trie, same logits."""
import json

import numpy as np
import pytest
import torch

from grserve.bundle import GRBundle


def test_save_load_round_trip(tiny_bundle, tiny_model_dir):
    loaded = GRBundle.load(tiny_model_dir)
    assert np.array_equal(loaded.table.codes, tiny_bundle.table.codes)
    assert loaded.table.raw_ids == tiny_bundle.table.raw_ids
    assert loaded.settings == tiny_bundle.settings
    assert torch.equal(loaded.trie.l2_codes, tiny_bundle.trie.l2_codes)
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
