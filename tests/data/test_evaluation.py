"""Ranking metrics and the popularity baseline against hand-worked values."""
import math

import pytest

from grserve.data.evaluation import popularity_ranking, ranking_metrics
from grserve.data.split import Example


def test_metrics_by_hand():
    ranked = [[5, 1, 2, 3, 4, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2]]
    targets = [5, 7, 99]
    m = ranking_metrics(ranked, targets)
    assert m["recall@5"] == pytest.approx(1 / 3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx(1 / 3)  # rank 0 → 1/log2(2) = 1
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(6 + 2)) / 3)


def test_popularity_counts_histories_and_skips_seen_items():
    examples = [Example("a", [0, 1, 1], 2), Example("b", [1, 2, 2, 2], 0)]
    # counts: 0→1, 1→3, 2→3 ; ties by row: 1, 2, 0, 3
    assert popularity_ranking(examples, 4, 2, exclude_history=False) == [[1, 2], [1, 2]]
    assert popularity_ranking(examples, 4, 2) == [[2, 3], [0, 3]]
