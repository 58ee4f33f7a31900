"""The published anchors belong to a dataset by name and size: a look-alike gets none."""
from grserve.data.anchors import anchors_for
from grserve.data.dataset import SequenceDataset


def dataset(name: str, users: int, items: int) -> SequenceDataset:
    ids = [str(i) for i in range(items)]
    return SequenceDataset(name, ids, ids, ids, {f"u{u}": [0] for u in range(users)})


def test_anchors_of_movielens_and_beauty():
    assert dict(anchors_for(dataset("ml-100k", 943, 1682))) == {
        "RecBole GRU4Rec": {"ndcg@10": 0.0594}, "RecBole SASRec": {"ndcg@10": 0.0554}}
    beauty = dict(anchors_for(dataset("Beauty", 22363, 12101)))
    assert list(beauty) == ["SASRec (TIGER paper)", "TIGER (TIGER paper)", "ActionPiece (ICML 2025)"]
    assert beauty["ActionPiece (ICML 2025)"] == {"recall@5": 0.0511, "ndcg@5": 0.0340, "recall@10": 0.0775,
                                                 "ndcg@10": 0.0424}


def test_no_anchors_for_another_dataset_of_the_same_name():
    assert anchors_for(dataset("Beauty", 100, 50)) == []
    assert anchors_for(dataset("ml-1m", 943, 1682)) == []
