"""Published results to read a model's metrics against (issue 16's table): on the same leave-one-out split
and full ranking over the catalog, for the two datasets whose numbers are known. A dataset is recognised by
its name and size, so another file that happens to be called Beauty.txt gets no anchors."""
from __future__ import annotations

from grserve.data.dataset import SequenceDataset

# (name, users, items) -> [(system, {metric: value})]; a metric a source does not report is left out.
ANCHORS: dict[tuple[str, int, int], list[tuple[str, dict[str, float]]]] = {
    ("ml-100k", 943, 1682): [
        # RecBole 1.2.1 defaults, ~10 CPU epochs (both still improving), measured for issue 16.
        ("RecBole GRU4Rec", {"ndcg@10": 0.0594}),
        ("RecBole SASRec", {"ndcg@10": 0.0554}),
    ],
    ("Beauty", 22363, 12101): [
        ("SASRec (TIGER paper)", {"recall@5": 0.0387, "ndcg@5": 0.0249, "recall@10": 0.0605, "ndcg@10": 0.0318}),
        ("TIGER (TIGER paper)", {"recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384}),
        ("ActionPiece (ICML 2025)", {"recall@5": 0.0511, "ndcg@5": 0.0340, "recall@10": 0.0775,
                                     "ndcg@10": 0.0424}),
    ],
}


def anchors_for(dataset: SequenceDataset) -> list[tuple[str, dict[str, float]]]:
    """The published rows for this dataset's test split, or none."""
    return ANCHORS.get((dataset.name, len(dataset.sequences), len(dataset.item_ids)), [])
