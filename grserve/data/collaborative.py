"""Collaborative item embeddings from the training sequences: which items users take near each other.

Text alone puts a nail polish beside every other nail polish; the next item a user takes is often of
another kind (a remover, a base coat). Appended to the text embedding before residual k-means, these
vectors let the first codes of a SID group items that are taken together, so the model's first token
narrows the catalog the way the next item does (LC-Rec and LETTER add collaborative signal to SIDs for the
same reason). Built from the training part of the split only: no validation or test item is seen.

The embedding is a truncated SVD of the positive pointwise mutual information of co-occurrence within a
few steps of each other (the matrix word2vec implicitly factorises), rows scaled to unit length; an item
no training sequence holds gets a zero row, as a new item known only by its text does later.
"""
from __future__ import annotations

import numpy as np


def cooccurrence_counts(sequences: list[list[int]], num_items: int, window: int):
    """Symmetric sparse counts [num_items, num_items]: each pair of items `d <= window` steps apart in a
    sequence adds 1/d (nearer pairs say more); an item never pairs with itself."""
    from scipy.sparse import coo_matrix

    rows, cols, weights = [], [], []
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64)
        for d in range(1, min(window, len(s) - 1) + 1):
            a, b = s[:-d], s[d:]
            keep = a != b
            rows += [a[keep], b[keep]]
            cols += [b[keep], a[keep]]
            weights.append(np.full(2 * int(keep.sum()), 1.0 / d))
    if not weights:
        return coo_matrix((num_items, num_items)).tocsr()
    return coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(num_items, num_items)).tocsr()  # tocsr sums duplicate pairs


def collaborative_embeddings(sequences: list[list[int]], num_items: int, dim: int = 64, window: int = 3,
                             seed: int = 0) -> np.ndarray:
    """Unit-length float32 [num_items, dim] (zero rows for items without a co-occurring pair)."""
    from scipy.sparse import coo_matrix
    from sklearn.decomposition import TruncatedSVD

    counts = cooccurrence_counts(sequences, num_items, window).tocoo()
    out = np.zeros((num_items, dim), dtype=np.float32)
    if counts.nnz == 0:
        return out
    marginal = np.asarray(counts.sum(axis=1)).ravel()
    pmi = np.log(counts.data * counts.data.sum() / (marginal[counts.row] * marginal[counts.col]))
    keep = pmi > 0
    ppmi = coo_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape).tocsr()
    # TruncatedSVD needs fewer components than columns; tiny catalogs pad the rest with zeros.
    k = min(dim, num_items - 1)
    if k < 1 or ppmi.nnz == 0:
        return out
    vectors = TruncatedSVD(k, random_state=seed).fit_transform(ppmi)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out[:, :k] = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return out
