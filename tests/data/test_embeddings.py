"""The MiniLM encoder shipped in a wheel loads with the hub switched off and embeds by meaning."""
import numpy as np

from grserve.data.embeddings import embed_texts


def test_minilm_offline_embeddings(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = embed_texts(["red nail polish", "crimson nail lacquer", "science fiction space battle movie"])
    assert e.shape == (3, 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
