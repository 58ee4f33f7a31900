"""Semantic IDs from item embeddings: residual k-means (RQ-KMeans), as in TIGER and OneRec."""

from __future__ import annotations

import numpy as np

# A few k-means++ restarts per level: enough to avoid a bad seeding on small catalogs, still cheap on
# a million items (each restart is a full Lloyd run).
_N_INIT = 3


def _embeddings(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty [N, D] array, got shape {x.shape}")
    return x


def residual_kmeans_fit(
    embeddings: np.ndarray, codebook_size: int = 256, levels: int = 3, seed: int = 0, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Quantise `embeddings` [N, D] into `levels` codes per item, each in [0, codebook_size).

    Level 0 clusters the embeddings; every next level clusters the residual left after subtracting the
    centroids chosen so far, so the codes read coarse-to-fine. Returns int32 codes [N, levels] and the
    float32 centroids [levels, codebook_size, D] (`Codebooks.centroids`; NaN rows for codes a level with
    fewer distinct residuals than codes could not use); each item's code is its nearest centroid.
    `progress` shows a bar over the levels (Beauty's 12,101 items: ~40 s a level on one core).
    """
    # sklearn is only installed with the training extra; serving never builds SIDs.
    from sklearn.cluster import KMeans
    from tqdm import tqdm

    x = _embeddings(embeddings)
    if codebook_size < 1 or levels < 1:
        raise ValueError(f"codebook_size and levels must be >= 1, got {codebook_size}, {levels}")
    # float32 halves memory on large catalogs; sklearn keeps float32 end to end.
    residual = np.array(x, dtype=np.float32)
    codes = np.empty((x.shape[0], levels), dtype=np.int32)
    centroids = np.full((levels, codebook_size, x.shape[1]), np.nan, dtype=np.float32)
    for level in tqdm(range(levels), desc="semantic IDs (k-means levels)", disable=not progress):
        # k-means cannot find more clusters than distinct points (tiny catalogs, duplicated embeddings,
        # or residuals that collapsed to zero once every point is its own centroid).
        n_distinct = len(np.unique(residual, axis=0))
        kmeans = KMeans(
            n_clusters=min(codebook_size, n_distinct), n_init=_N_INIT, random_state=seed + level
        ).fit(residual)
        # sklearn ends on an assignment step, so labels_ are the nearest of these cluster_centers_.
        codes[:, level] = kmeans.labels_
        centroids[level, :kmeans.n_clusters] = kmeans.cluster_centers_
        residual -= kmeans.cluster_centers_[kmeans.labels_]
    return codes, centroids


def residual_kmeans(
    embeddings: np.ndarray, codebook_size: int = 256, levels: int = 3, seed: int = 0
) -> np.ndarray:
    """The codes of `residual_kmeans_fit` alone: int32 [N, levels]."""
    return residual_kmeans_fit(embeddings, codebook_size, levels, seed)[0]


def centroids_from_codes(embeddings: np.ndarray, codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """The residual k-means centroids that given codes imply: at each level, code k's centroid is the mean
    of that level's residuals over the items with code k (the k-means centre once Lloyd has converged);
    NaN for a code no item has. float32 [levels, codebook_size, D], residuals in float32 as in training."""
    x = _embeddings(embeddings)
    codes = np.asarray(codes)
    if codes.ndim != 2 or len(codes) != len(x):
        raise ValueError(f"codes must have shape [{len(x)}, levels], got {codes.shape}")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size}), got [{codes.min()}, {codes.max()}]")
    residual = np.array(x, dtype=np.float32)
    centroids = np.empty((codes.shape[1], codebook_size, x.shape[1]), dtype=np.float32)
    for level, labels in enumerate(codes.T):
        sums = np.zeros((codebook_size, x.shape[1]))
        np.add.at(sums, labels, residual)
        counts = np.bincount(labels, minlength=codebook_size)[:, None]
        with np.errstate(invalid="ignore"):  # 0/0 is the NaN an unused code gets
            centroids[level] = sums / counts
        residual -= centroids[level][labels]
    return centroids
