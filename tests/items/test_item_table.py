"""ItemTable: validation, lookups, and the items.bin / items.json round trip, including damaged files."""

import json

import numpy as np
import pytest

from grserve.items import ItemTable
from grserve.items.item_table import record_dtype

RECORD_DTYPE = record_dtype(3)


def make_table(n=50, k=16, titles=True, seed=0, levels=3):
    codes = np.random.default_rng(seed).integers(0, k, size=(n, levels)).astype(np.int32)
    raw_ids = [f"item-{i * 7}" for i in range(n)]
    return ItemTable(k, codes, raw_ids, [f"Título {i} ✓" for i in range(n)] if titles else None)


@pytest.mark.parametrize("levels", [2, 3, 4])
@pytest.mark.parametrize("titles", [True, False])
def test_round_trip(tmp_path, titles, levels):
    table = make_table(titles=titles, levels=levels)
    table.save(tmp_path)
    loaded = ItemTable.load(tmp_path)
    assert loaded.codebook_size == table.codebook_size and loaded.levels == table.levels == levels
    assert loaded.codes.dtype == np.int32 and np.array_equal(loaded.codes, table.codes)
    assert loaded.raw_ids == table.raw_ids
    assert loaded.titles == table.titles
    assert len(loaded) == 50 and loaded.row_of("item-21") == 3


def test_items_bin_is_the_xllm_record(tmp_path):
    table = make_table(n=5)
    table.save(tmp_path)
    assert RECORD_DTYPE.itemsize == 20
    assert (tmp_path / "items.bin").stat().st_size == 5 * 20
    record = np.dtype([("item_id", "<i8"), ("c0", "<i4"), ("c1", "<i4"), ("c2", "<i4")])
    records = np.fromfile(tmp_path / "items.bin", dtype=record)
    assert records["item_id"].tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(np.stack([records["c0"], records["c1"], records["c2"]], axis=1), table.codes)
    # Byte-level check of the first record: little-endian int64 then three int32.
    raw = (tmp_path / "items.bin").read_bytes()[:20]
    c0, c1, c2 = (int(c) for c in table.codes[0])
    assert raw == (0).to_bytes(8, "little") + b"".join(c.to_bytes(4, "little") for c in (c0, c1, c2))
    meta = json.loads((tmp_path / "items.json").read_text(encoding="utf-8"))
    assert meta["format"] == "grserve-items-v1" and meta["levels"] == 3 and meta["codebook_size"] == 16


def test_items_bin_of_four_levels_is_int64_and_four_int32(tmp_path):
    """TIGER's fourth code: a record is 8 + 4 * 4 bytes, the codes in order after the id."""
    table = make_table(n=3, levels=4)
    table.save(tmp_path)
    raw = (tmp_path / "items.bin").read_bytes()
    assert len(raw) == 3 * 24
    for row in range(3):
        record = raw[24 * row:24 * (row + 1)]
        assert int.from_bytes(record[:8], "little") == row
        assert [int.from_bytes(record[8 + 4 * l:12 + 4 * l], "little") for l in range(4)] == table.codes[row].tolist()
    assert json.loads((tmp_path / "items.json").read_text(encoding="utf-8"))["levels"] == 4


def test_load_reorders_records_by_item_id(tmp_path):
    table = make_table(n=6)
    table.save(tmp_path)
    records = np.fromfile(tmp_path / "items.bin", dtype=RECORD_DTYPE)
    records[::-1].tofile(tmp_path / "items.bin")
    assert np.array_equal(ItemTable.load(tmp_path).codes, table.codes)


def test_row_of():
    table = ItemTable(4, np.zeros((3, 3), dtype=np.int32), ["10", "20", "30"])
    assert [table.row_of(r) for r in ("30", "10", "99")] == [2, 0, None]


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, np.zeros((1, 3)), ["a"]), "codebook_size"),
        ((4, np.zeros((2, 1), dtype=int), ["a", "b"]), "shape"),
        ((4, np.zeros(2, dtype=int), ["a", "b"]), "shape"),
        ((4, np.zeros((1, 3)), ["a"]), "integers"),
        ((4, np.array([[0, 4, 1]]), ["a"]), r"\[0, 4\)"),
        ((4, np.array([[0, -1, 1]]), ["a"]), r"\[0, 4\)"),
        ((4, np.zeros((2, 3), dtype=int), ["a"]), "1 raw_ids for 2 rows"),
        ((4, np.zeros((2, 3), dtype=int), ["a", 2]), "strings"),
        ((4, np.zeros((2, 3), dtype=int), ["a", "a"]), "unique"),
        ((4, np.zeros((2, 3), dtype=int), ["a", "b"], ["t"]), "1 titles for 2 rows"),
    ],
)
def test_validation(args, match):
    with pytest.raises(ValueError, match=match):
        ItemTable(*args)


def test_load_rejects_truncated_bin(tmp_path):
    make_table(n=4).save(tmp_path)
    path = tmp_path / "items.bin"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="not a multiple of 20"):
        ItemTable.load(tmp_path)


def test_load_rejects_count_mismatch(tmp_path):
    make_table(n=4).save(tmp_path)
    path = tmp_path / "items.bin"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="3 records but 4 raw_ids"):
        ItemTable.load(tmp_path)


def test_load_rejects_bad_item_ids(tmp_path):
    make_table(n=4).save(tmp_path)
    records = np.fromfile(tmp_path / "items.bin", dtype=RECORD_DTYPE)
    records["item_id"][3] = 1  # duplicate id, id 3 missing
    records.tofile(tmp_path / "items.bin")
    with pytest.raises(ValueError, match=r"not exactly 0\.\.3"):
        ItemTable.load(tmp_path)


def test_load_rejects_out_of_range_codes(tmp_path):
    make_table(n=4, k=16).save(tmp_path)
    records = np.fromfile(tmp_path / "items.bin", dtype=RECORD_DTYPE)
    records["c2"][0] = 16
    records.tofile(tmp_path / "items.bin")
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        ItemTable.load(tmp_path)


@pytest.mark.parametrize("key, value, match", [("format", "other-v9", "format"), ("levels", 4, "of 4 levels"),
                                               ("levels", 1, "levels must be an integer >= 2"),
                                               ("levels", "3", "levels must be"), ("levels", None, "levels must")])
def test_load_rejects_foreign_metadata(tmp_path, key, value, match):
    make_table(n=4).save(tmp_path)
    meta = json.loads((tmp_path / "items.json").read_text(encoding="utf-8"))
    meta[key] = value
    (tmp_path / "items.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        ItemTable.load(tmp_path)


def test_with_items_equals_a_table_built_whole():
    """Known ids keep their rows (new SID and title), new ids follow in order; the row lookup is the one a table
    built from scratch has."""
    base = ItemTable(4, np.array([[0, 1, 2], [3, 3, 3], [1, 1, 1]]), ["a", "b", "c"], ["A", "B", "C"])
    got = base.with_items(["d", "b", "e"], np.array([[2, 2, 2], [0, 0, 0], [1, 2, 3]]), ["D", None, "E"])
    want = ItemTable(4, np.array([[0, 1, 2], [0, 0, 0], [1, 1, 1], [2, 2, 2], [1, 2, 3]]),
                     ["a", "b", "c", "d", "e"], ["A", None, "C", "D", "E"])
    assert np.array_equal(got.codes, want.codes) and got.codes.dtype == want.codes.dtype
    assert got.raw_ids == want.raw_ids and got.titles == want.titles
    assert [got.row_of(r) for r in "abcdez"] == [want.row_of(r) for r in "abcdez"]
    assert base.raw_ids == ["a", "b", "c"] and base.codes[1].tolist() == [3, 3, 3] and base.row_of("d") is None
    untitled = ItemTable(4, np.zeros((1, 3), dtype=np.int32), ["a"]).with_items(["b"], np.ones((1, 3)), [None])
    assert untitled.titles is None and untitled.row_of("b") == 1
    for bad in ((["x"], [[0, 0, 4]], [None]), (["x", "x"], [[0, 0, 0]] * 2, [None] * 2), (["x"], [[0, 0]], [None]),
                (["x"], [[0, 0, 0, 0]], [None])):
        with pytest.raises(ValueError):
            base.with_items(bad[0], np.array(bad[1]), bad[2])
