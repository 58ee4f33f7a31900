"""Semantic IDs from item embeddings: residual k-means (RQ-KMeans), as in TIGER and OneRec."""

from __future__ import annotations

import numpy as np

# A few k-means++ restarts per level: enough to avoid a bad seeding on small catalogs, still cheap on
# a million items (each restart is a full Lloyd run).
_N_INIT = 3


def residual_kmeans(
    embeddings: np.ndarray, codebook_size: int = 256, levels: int = 3, seed: int = 0
) -> np.ndarray:
    """Quantise `embeddings` [N, D] into `levels` codes per item, each in [0, codebook_size).

    Level 0 clusters the embeddings; every next level clusters the residual left after subtracting the
    centroids chosen so far, so the codes read coarse-to-fine. Returns int32 codes [N, levels].
    """
    # sklearn is only installed with the training extra; serving never builds SIDs.
    from sklearn.cluster import KMeans

    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty [N, D] array, got shape {x.shape}")
    if codebook_size < 1 or levels < 1:
        raise ValueError(f"codebook_size and levels must be >= 1, got {codebook_size}, {levels}")
    # float32 halves memory on large catalogs; sklearn keeps float32 end to end.
    residual = np.array(x, dtype=np.float32)
    codes = np.empty((x.shape[0], levels), dtype=np.int32)
    for level in range(levels):
        # k-means cannot find more clusters than distinct points (tiny catalogs, duplicated embeddings,
        # or residuals that collapsed to zero once every point is its own centroid).
        n_distinct = len(np.unique(residual, axis=0))
        kmeans = KMeans(
            n_clusters=min(codebook_size, n_distinct), n_init=_N_INIT, random_state=seed + level
        ).fit(residual)
        codes[:, level] = kmeans.labels_
        residual -= kmeans.cluster_centers_[kmeans.labels_]
    return codes
