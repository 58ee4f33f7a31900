"""The S3-Rec sequence format, on a hand-written file and on the real Amazon Beauty data."""
from __future__ import annotations

import json

import pytest

from grserve.data.recipes import recipe_for
from grserve.data.sequence_file import load_sequence_file
from grserve.data.split import leave_one_out
from tests.conftest import shared_data


def test_hand_written_file(tmp_path):
    (tmp_path / "seq.txt").write_text("1 3 2 3\n2 10 2\n")
    (tmp_path / "toy_item_meta.json").write_text(json.dumps(
        {"2": {"title": "Two", "attributes": ["Brand", "Cat"]}, "3": {"idgenrec_textid": "three"}}))
    ds = load_sequence_file(tmp_path / "seq.txt")  # the meta file beside it is found by name
    assert ds.item_ids == ["2", "3", "10"]
    assert {u: [ds.item_ids[r] for r in s] for u, s in ds.sequences.items()} == {
        "1": ["3", "2", "3"], "2": ["10", "2"]}
    assert ds.titles == ["Two", "three", "10"]
    assert ds.texts == ["Two Brand Cat", "three", "10"]


def test_duplicate_user_is_an_error(tmp_path):
    (tmp_path / "seq.txt").write_text("1 3 2\n1 4 5\n")
    with pytest.raises(ValueError, match="appears twice"):
        load_sequence_file(tmp_path / "seq.txt")


def test_amazon_beauty_counts_and_split():
    ds = load_sequence_file(shared_data("data/beauty/Beauty.txt"))
    # The counts TIGER's Table 1 and SOURCE.md give for this split.
    assert ds.describe() == {"name": "Beauty", "users": 22363, "items": 12101, "interactions": 198502}
    assert [ds.item_ids[r] for r in ds.sequences["1"]] == ["1", "2", "3", "4", "5"]
    assert ds.texts[ds.item_ids.index("1")] == "nail lacquer simmer and shimmer OPI Makeup Nails Nail Polish"
    split = leave_one_out(ds.sequences)
    assert len(split.test) == len(split.valid) == 22363
    assert sum(len(s) for s in split.train.values()) == 153776  # = 198,502 - 2 * 22,363
    # grserve train recognises the split and starts from its recipe; a file of another size gets none
    assert recipe_for(ds)["codebook_size"] == 256
    ds.sequences.pop("1")
    assert recipe_for(ds) == {}
