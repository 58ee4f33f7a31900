"""Residual-quantisation codebooks: the centroids that gave every item its semantic ID, kept with the
model (`codebooks.safetensors`) so that an item known only by its text gets a SID by the same rule.

A NaN centroid row is a code that no training item had (a level with fewer distinct residuals than
codes): it is never chosen. Centroids may be wider than the text embedding (`text_dim`): training appends
collaborative dimensions (`grserve/data/collaborative.py`), which an item known only by its text has as
zeros, as the training items that no sequence held had them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE_NAME = "codebooks.safetensors"
FORMAT = "grserve-codebooks-v1"
TENSOR = "centroids"
# Rows quantised at once: bounds the [rows, K] float64 distance block on million-item catalogs.
_CHUNK = 65536


def nearest_centroid(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the centroid nearest to each point (squared Euclidean distance; ties go to the lowest
    index, as in k-means' assignment step), skipping NaN rows. int32 [N]."""
    c = centroids.astype(np.float64)
    usable = ~np.isnan(c).any(axis=1)
    c[~usable] = 0.0
    # ||p||² is the same for every centroid, so ||c||² - 2 p·c orders them as the distance does; in
    # float64, so rounding hardly ever decides between two near-equal centroids.
    offsets = np.where(usable, np.einsum("kd,kd->k", c, c), np.inf)
    out = np.empty(len(points), dtype=np.int32)
    for start in range(0, len(points), _CHUNK):
        block = points[start:start + _CHUNK].astype(np.float64)
        out[start:start + _CHUNK] = np.argmin(offsets - 2.0 * block @ c.T, axis=1)
    return out


# eq=False: element-wise array comparison has no single truth value, so identity equality it is.
@dataclass(eq=False)
class Codebooks:
    centroids: np.ndarray  # float32 [levels, K, D]: level l's K centroids of the residual left by levels < l
    encoder: str  # the text encoder's name (grserve.data.embeddings.ENCODER)
    text_dim: int | None = None  # the leading dimensions that are the text embedding; None: all of them

    def __post_init__(self) -> None:
        c = np.asarray(self.centroids)
        if c.ndim != 3 or 0 in c.shape:
            raise ValueError(f"centroids must be a non-empty [levels, K, D] array, got shape {c.shape}")
        if not np.issubdtype(c.dtype, np.floating):
            raise ValueError(f"centroids must be floating point, got dtype {c.dtype}")
        unused = np.isnan(c).all(axis=2)
        if not np.isfinite(c[~unused]).all():
            raise ValueError("centroids must be finite (a code no item had is a row of NaN)")
        if unused.all(axis=1).any():
            raise ValueError("every level needs at least one centroid that is not NaN")
        if not isinstance(self.encoder, str) or not self.encoder:
            raise ValueError(f"encoder must be a non-empty name, got {self.encoder!r}")
        if self.text_dim is None:
            self.text_dim = c.shape[2]
        if not isinstance(self.text_dim, int) or not 0 < self.text_dim <= c.shape[2]:
            raise ValueError(f"text_dim must be 1 .. {c.shape[2]} (the centroids' width), got {self.text_dim!r}")
        self.centroids = np.ascontiguousarray(c, dtype=np.float32)

    @property
    def levels(self) -> int:
        return self.centroids.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.centroids.shape[1]

    @property
    def dim(self) -> int:
        return self.centroids.shape[2]

    def quantize(self, embeddings: np.ndarray) -> np.ndarray:
        """Codes int32 [N, levels]: at each level the nearest centroid to the residual, which then loses
        that centroid; float32 residuals, as training computed them."""
        x = np.asarray(embeddings)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"embeddings must have shape [N, {self.dim}], got {x.shape}")
        residual = np.array(x, dtype=np.float32)
        codes = np.empty((len(x), self.levels), dtype=np.int32)
        for level, centroids in enumerate(self.centroids):
            codes[:, level] = nearest_centroid(residual, centroids)
            residual -= centroids[codes[:, level]]
        return codes

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """SIDs int32 [N, levels] of item texts: embedded by the encoder the codebooks were built with,
        then quantised. Needs the `train` extra (the encoder)."""
        # Imported here: the encoder lives with the training code, and serving a model whose catalog
        # never receives text must not need it.
        from grserve.data.embeddings import ENCODER, embed_texts

        if self.encoder != ENCODER:
            raise ValueError(f"these codebooks were built with encoder {self.encoder!r}; "
                             f"grserve embeds text with {ENCODER!r} only")
        if not texts:
            return np.empty((0, self.levels), dtype=np.int32)
        text = embed_texts(list(texts))
        if text.shape[1] != self.text_dim:
            raise ValueError(f"the encoder gives {text.shape[1]} dimensions; these codebooks' text has "
                             f"{self.text_dim}")
        # No interactions yet: the collaborative part is zero, as for training items no sequence held.
        return self.quantize(np.pad(text, ((0, 0), (0, self.dim - self.text_dim))))

    def save(self, model_dir: str | Path) -> None:
        from safetensors.numpy import save

        path = Path(model_dir) / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed, so a reader never sees half a file; from bytes, because safetensors'
        # own save_file creates the file readable by its owner only (no good in a shipped package).
        tmp = path.with_name(path.name + ".tmp")
        meta = {"format": FORMAT, "encoder": self.encoder, "text_dim": str(self.text_dim)}
        tmp.write_bytes(save({TENSOR: self.centroids}, metadata=meta))
        os.replace(tmp, path)

    @classmethod
    def load(cls, model_dir: str | Path) -> Codebooks | None:
        """The model directory's codebooks, or None when it has none (a model trained before they were
        saved, or on a given item table)."""
        from safetensors import SafetensorError, safe_open

        path = Path(model_dir) / FILE_NAME
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="np") as f:
                meta, names = f.metadata() or {}, list(f.keys())
                if TENSOR not in names:
                    raise ValueError(f"{path}: no {TENSOR!r} tensor (has {names})")
                centroids = f.get_tensor(TENSOR)
        except SafetensorError as e:
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        try:
            text_dim = int(meta.get("text_dim", centroids.shape[-1]))  # files before it: text only
            return cls(centroids, meta.get("encoder", ""), text_dim)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
