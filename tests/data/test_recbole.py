"""RecBole atomic files, against hand-worked examples and MovieLens-100K's published counts."""
from __future__ import annotations

import pytest

from grserve.data.recbole import from_atomic, load_movielens_100k, read_atomic

INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "u1\t10\t5\t300\n"
         "u2\t20\t3\t100\n"
         "u1\t20\t4\t100\n"
         "u1\t30\t4\t100\n"   # same time as the line above: file order is kept
         "u2\t10\t1\t200\n")
ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tAlpha\t1995\tComedy\n"
        "20\tBeta\t1996\tDrama Romance\n"
        "30\tGamma\t1997\tHorror\n"
        "40\tDelta\t1998\tAction\n")


def test_read_atomic_drops_type_suffixes():
    cols = read_atomic(ITEM)
    assert list(cols) == ["item_id", "movie_title", "release_year", "class"]
    assert cols["movie_title"] == ["Alpha", "Beta", "Gamma", "Delta"]


def test_read_atomic_rejects_ragged_lines():
    with pytest.raises(ValueError, match="line 2"):
        read_atomic("a:token\tb:token\nonly-one\n")


def test_sequences_are_ordered_by_time_with_stable_ties():
    ds = from_atomic("toy", INTER, ITEM)
    rows = {u: [ds.item_ids[r] for r in s] for u, s in ds.sequences.items()}
    assert rows == {"u1": ["20", "30", "10"], "u2": ["20", "10"]}
    assert ds.item_ids == ["10", "20", "30", "40"]  # items without interactions stay in the catalog
    assert ds.titles[1] == "Beta" and ds.texts[1] == "Beta Drama Romance"


def test_unknown_item_in_inter_is_an_error():
    with pytest.raises(ValueError, match="absent from .item"):
        from_atomic("toy", INTER + "u3\t99\t1\t5\n", ITEM)


def test_movielens_100k_from_the_recbole_wheel():
    ds = load_movielens_100k()
    assert ds.describe() == {"name": "ml-100k", "users": 943, "items": 1682, "interactions": 100000}
    assert ds.titles[0] == "Toy Story"
    assert min(len(s) for s in ds.sequences.values()) >= 20  # ML-100K keeps users with 20+ ratings
