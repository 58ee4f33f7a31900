"""residual_kmeans: code shapes and ranges, recovery of well-separated clusters, determinism, tiny inputs;
the centroids that given codes imply."""

import numpy as np
import pytest

from grserve.items import residual_kmeans
from grserve.items.semantic_ids import centroids_from_codes


def test_shape_dtype_ranges():
    emb = np.random.default_rng(0).normal(size=(200, 16))
    codes = residual_kmeans(emb, codebook_size=8)
    assert codes.shape == (200, 3) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 8
    assert residual_kmeans(emb, codebook_size=8, levels=2).shape == (200, 2)


def test_separated_clusters_get_distinct_first_codes():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(6, 32)) * 100
    labels = np.repeat(np.arange(6), 30)
    emb = centers[labels] + rng.normal(size=(len(labels), 32))
    codes = residual_kmeans(emb, codebook_size=6)
    # Each cluster maps to one c0, and the six c0 codes are all different.
    first = {int(c) for c in codes[:, 0]}
    assert len(first) == 6
    for cluster in range(6):
        assert len(set(codes[labels == cluster, 0].tolist())) == 1
    # Inside a cluster the finer levels tell points apart (noise is all that is left).
    assert len({tuple(c) for c in codes.tolist()}) > 6


def test_residual_levels_refine():
    # Two coarse groups, each with two sub-groups offset by a smaller vector: level 1 must pick that up.
    rng = np.random.default_rng(2)
    coarse = np.repeat([[50.0, 0.0], [-50.0, 0.0]], 40, axis=0)
    fine = np.tile(np.repeat([[0.0, 5.0], [0.0, -5.0]], 20, axis=0), (2, 1))
    codes = residual_kmeans(coarse + fine + rng.normal(scale=0.1, size=(80, 2)), codebook_size=2)
    sub = np.repeat(np.arange(4), 20)
    pairs = {tuple(c) for c in codes[:, :2].tolist()}
    assert len(pairs) == 4
    for s in range(4):
        assert len({tuple(c) for c in codes[sub == s, :2].tolist()}) == 1


def test_deterministic_for_seed():
    emb = np.random.default_rng(3).normal(size=(120, 8))
    assert np.array_equal(residual_kmeans(emb, 16, seed=5), residual_kmeans(emb, 16, seed=5))


@pytest.mark.parametrize("n", [1, 2, 7])
def test_fewer_points_than_codebook(n):
    emb = np.random.default_rng(4).normal(size=(n, 4))
    codes = residual_kmeans(emb, codebook_size=256)
    assert codes.shape == (n, 3) and codes.min() >= 0 and codes.max() < n
    # Distinct points land on distinct c0 when there are clusters enough for all of them.
    assert len(set(codes[:, 0].tolist())) == n


def test_duplicated_embeddings():
    emb = np.repeat(np.eye(3), [4, 1, 2], axis=0)
    codes = residual_kmeans(emb, codebook_size=16)
    assert codes.max() < 3 and len(set(codes[:, 0].tolist())) == 3
    for rows in (slice(0, 4), slice(5, 7)):
        assert len({tuple(c) for c in codes[rows].tolist()}) == 1


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="N, D"):
        residual_kmeans(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="N, D"):
        residual_kmeans(np.zeros(4))


def test_centroids_from_codes_hand_worked():
    points = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0]])
    codes = np.array([[0, 1], [0, 0], [1, 0]])
    # Level 0: code 0 = mean of (0,0), (2,0) = (1,0); code 1 = (10,10); code 2 has no item (NaN).
    # Residuals (-1,0), (1,0), (0,0); level 1: code 0 = mean of (1,0), (0,0) = (0.5,0); code 1 = (-1,0).
    nan = [np.nan, np.nan]
    expected = [[[1, 0], [10, 10], nan], [[0.5, 0], [-1, 0], nan]]
    np.testing.assert_array_equal(centroids_from_codes(points, codes, 3), np.array(expected, dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        centroids_from_codes(points, codes, 1)
    with pytest.raises(ValueError, match="shape"):
        centroids_from_codes(points, codes[:2], 3)
