"""Item → SID maps made outside grserve: rows of one depth, codes >= 0, each id once, titles from another file;
xLLM's binary records of any depth, a size that is no whole number of records refused; every error names the
file, the line or record, and the field. Hand-worked maps."""
from __future__ import annotations

import numpy as np
import pytest

from grserve.items.item_table import record_dtype
from grserve.items.sid_map import SIDMap


def items(*rows) -> list[dict]:
    return [{"item_id": i, "semantic_id": list(sid), **({"title": t} if t else {})} for i, sid, t in rows]


def test_rows_become_a_table_and_shared_sids_are_counted():
    m = SIDMap.from_items("m.csv", items(("a", (1, 2, 3), "A"), ("b", (1, 2, 3), None), ("c", (0, 0, 1), None)),
                          [2, 3, 5])
    assert m.levels == 3 and m.shared == 2  # a and b share (1, 2, 3)
    table = m.table(4)
    assert list(table.raw_ids) == ["a", "b", "c"] and table.codes.tolist() == [[1, 2, 3], [1, 2, 3], [0, 0, 1]]
    assert list(table.titles) == ["A", None, None]


@pytest.mark.parametrize("rows,message", [
    ((("a", (1, 2, 3), None), ("b", (1, 2), None)), "m.csv line 3: 2 codes, but line 2 has 3"),
    ((("a", (1, 2, 3), None), ("a", (0, 1, 2), None)), "m.csv line 3: item_id 'a' again (first at line 2)"),
    ((("a", (1, -2, 3), None),), "m.csv line 2: c1: code -2 is negative"),
    ((("a", (1,), None),), "m.csv line 2: semantic_id: levels must be an integer >= 2"),
])
def test_bad_rows_are_named(rows, message):
    with pytest.raises(ValueError) as e:
        SIDMap.from_items("m.csv", items(*rows), list(range(2, 2 + len(rows))))
    assert str(e.value).startswith(message)


def test_codes_past_the_codebook_name_the_first_row_and_what_would_hold_them():
    m = SIDMap.from_items("m.csv", items(("a", (1, 2, 3), None), ("b", (0, 9, 1), None), ("c", (12, 0, 0), None)),
                          [1, 2, 3])
    m.check_codebook(13, "the model")
    with pytest.raises(ValueError) as e:
        m.check_codebook(8, "the model")
    assert str(e.value) == ("m.csv line 2: c1: code 9 is outside the codebook [0, 8) of the model; these codes need "
                            "a codebook of 13 or more")


@pytest.mark.parametrize("levels", [3, 4])
def test_binary_records_of_any_depth(levels, tmp_path):
    records = np.zeros(3, dtype=record_dtype(levels))
    records["item_id"] = [70, 12, 5]
    for level in range(levels):
        records[f"c{level}"] = [level, level + 1, 0]
    path = tmp_path / "vocab.bin"
    records.tofile(path)
    assert len(path.read_bytes()) == 3 * (8 + 4 * levels)
    m = SIDMap.from_records(path, levels)
    assert m.raw_ids == ["70", "12", "5"] and m.titles is None
    assert m.codes.tolist() == [[lv + d for lv in range(levels)] for d in (0, 1)] + [[0] * levels]


def test_binary_records_of_a_bad_size_or_repeated_ids(tmp_path):
    records = np.zeros(2, dtype=record_dtype(3))
    records["item_id"] = [4, 4]
    path = tmp_path / "vocab.bin"
    path.write_bytes(records.tobytes() + b"\0\0")  # 2 records of 20 bytes and 2 bytes more
    with pytest.raises(ValueError, match=r"vocab.bin: 42 bytes is not a whole number of 20-byte records"):
        SIDMap.from_records(path)
    records.tofile(path)
    with pytest.raises(ValueError, match=r"vocab.bin record 2: item_id '4' again \(first at record 1\)"):
        SIDMap.from_records(path)
    with pytest.raises(ValueError, match=r"vocab.bin: 40 bytes is not a whole number of 24-byte records"):
        SIDMap.from_records(path, 4)  # 3-level records read as 4 levels


def test_titles_from_another_file():
    m = SIDMap.from_items("m.csv", items(("a", (1, 2), None), ("b", (0, 1), None)), [1, 2])
    assert list(m.with_titles("t.csv", [("b", "Bee", 4)]).titles) == [None, "Bee"]
    with pytest.raises(ValueError, match=r"t.csv line 3: item_id 'z' is not in the SID map m.csv"):
        m.with_titles("t.csv", [("a", "A", 2), ("z", "Z", 3)])
    with pytest.raises(ValueError, match=r"t.csv line 5: item_id 'a' again \(first on line 2\)"):
        m.with_titles("t.csv", [("a", "A", 2), ("a", "A2", 5)])
