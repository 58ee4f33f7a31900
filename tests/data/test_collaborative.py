"""Collaborative item embeddings: the co-occurrence counts of a hand-worked sequence, and what the
embedding keeps of a catalog made of groups that users take together."""
import numpy as np

from grserve.data.collaborative import collaborative_embeddings, cooccurrence_counts


def test_counts_of_a_hand_worked_sequence():
    # 0 1 2 1 with window 2: steps of 1 give (0,1) (1,2) (2,1) → 0-1: 1, 1-2: 2; steps of 2 give (0,2)
    # and (1,1), which is the item with itself and dropped → 0-2: 1/2.
    counts = cooccurrence_counts([[0, 1, 2, 1], [3]], num_items=4, window=2).toarray()
    expected = np.array([[0, 1, 0.5, 0], [1, 0, 2, 0], [0.5, 2, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(counts, expected)


def test_items_taken_together_embed_together():
    # Two groups of four items; users only ever mix items of one group. Item 8 is in no sequence.
    rng = np.random.default_rng(0)
    sequences = [list(rng.choice(group, size=6)) for group in ([0, 1, 2, 3], [4, 5, 6, 7]) for _ in range(50)]
    vectors = collaborative_embeddings(sequences, num_items=9, dim=4)
    assert vectors.shape == (9, 4) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:8], axis=1), 1.0, rtol=1e-5)
    assert not vectors[8].any()
    similarity = vectors[:8] @ vectors[:8].T
    same = np.kron(np.eye(2), np.ones((4, 4))).astype(bool)
    assert similarity[same].min() > similarity[~same].max()


def test_no_pairs_give_zero_rows():
    assert not collaborative_embeddings([[0], [1, 1]], num_items=3, dim=2).any()
