"""`grserve import` on its maps: CSV with or without a header, TSV, JSON lines and xLLM's binary records (titles
from a file) give the item table the map says; broken maps exit 2 with the file, line and field named, and
nothing is written."""
from __future__ import annotations

import json

import numpy as np
import pytest

from grserve.bundle import GRBundle
from grserve.cli import main
from grserve.items.item_table import ItemTable, record_dtype
from tests.conftest import make_hf

K = 8
CODES = [[1, 2, 3], [1, 2, 3], [7, 0, 4], [0, 6, 6]]  # the first two share a SID
IDS = ["p1", "p2", "p3", "p4"]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf")
    make_hf(directory, "LlamaForCausalLM", 3 + 3 * K)
    return directory


def grserve_import(hf_dir, sid_map, out, *more: str) -> None:
    main(["import", "--hf-model", str(hf_dir), "--sid-map", str(sid_map), "--out", str(out), *more])


def refused(capsys, hf_dir, sid_map, out, *more: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        grserve_import(hf_dir, sid_map, out, *more)
    assert exit_.value.code == 2 and not out.exists()
    return capsys.readouterr().err


@pytest.mark.parametrize("name,text", [
    ("map.csv", "item_id,c0,c1,c2,title\n" + "".join(f"{i},{','.join(map(str, c))},T {i}\n" for i, c in zip(IDS, CODES))),
    ("map.tsv", "".join(f"{i}\t{chr(9).join(map(str, c))}\tT {i}\n" for i, c in zip(IDS, CODES))),
    ("map.jsonl", "".join(json.dumps({"item_id": i, "semantic_id": c, "title": f"T {i}"}) + "\n"
                          for i, c in zip(IDS, CODES))),
])
def test_text_maps_give_the_table_they_say(name, text, hf_dir, tmp_path, capsys):
    (tmp_path / name).write_text(text)
    grserve_import(hf_dir, tmp_path / name, tmp_path / "gr")
    assert json.loads(capsys.readouterr().out)["shared_sids"] == 2
    table = ItemTable.load(tmp_path / "gr")
    assert list(table.raw_ids) == IDS and table.codes.tolist() == CODES and table.codebook_size == K
    assert list(table.titles) == [f"T {i}" for i in IDS]
    assert GRBundle.load(tmp_path / "gr").settings.dataset == "map"


def test_binary_records_and_a_titles_file(hf_dir, tmp_path, capsys):
    records = np.zeros(len(CODES), dtype=record_dtype(3))
    records["item_id"] = [901, 17, 5, 300]
    for level in range(3):
        records[f"c{level}"] = [c[level] for c in CODES]
    records.tofile(tmp_path / "vocab.bin")
    (tmp_path / "titles.csv").write_text("item_id,title\n17,Seventeen\n901,Nine-oh-one\n")
    grserve_import(hf_dir, tmp_path / "vocab.bin", tmp_path / "gr", "--titles", str(tmp_path / "titles.csv"))
    table = ItemTable.load(tmp_path / "gr")
    assert list(table.raw_ids) == ["901", "17", "5", "300"] and table.codes.tolist() == CODES
    assert list(table.titles) == ["Nine-oh-one", "Seventeen", None, None]


@pytest.mark.parametrize("name,text,message", [
    ("dup.csv", "p1,1,2,3\np2,0,0,0\np1,4,4,4\n", "dup.csv line 3: item_id 'p1' again (first at line 1)"),
    ("cols.csv", "item_id,c0,c1,c2\np1,1,2,3\np2,1,2\n", "cols.csv line 3: expected item_id,c0,c1,c2[,title], got 3"),
    ("ragged.csv", "p1,1,2,3\np2,1,2,3,4\n", "ragged.csv line 2: 4 codes, but line 1 has 3"),
    ("code.csv", "p1,1,2,3\np2,1,x,3\n", "code.csv line 2: c1: not an integer code: 'x'"),
    ("range.csv", "p1,1,2,3\np2,1,8,3\n", "range.csv line 2: c1: code 8 is outside the codebook [0, 8)"),
    ("neg.tsv", "p1\t1\t-2\t3\n", "neg.tsv line 1: c1: code -2 is negative"),
    ("map.txt", "p1,1,2,3\n", "--format"),
])
def test_broken_maps_are_named(name, text, message, hf_dir, tmp_path, capsys):
    (tmp_path / name).write_text(text)
    assert message in refused(capsys, hf_dir, tmp_path / name, tmp_path / "gr")


def test_a_binary_map_of_a_bad_size(hf_dir, tmp_path, capsys):
    (tmp_path / "vocab.bin").write_bytes(b"\0" * 50)  # 2.5 records of 20 bytes
    err = refused(capsys, hf_dir, tmp_path / "vocab.bin", tmp_path / "gr")
    assert "vocab.bin: 50 bytes is not a whole number of 20-byte records" in err
    assert "--levels" in refused(capsys, hf_dir, tmp_path / "vocab.bin", tmp_path / "gr", "--levels", "1")


def test_a_map_of_another_depth_than_the_vocabulary(hf_dir, tmp_path, capsys):
    """24 code tokens split into 3 levels of 8 (or 2, 4, 6...), never into 5: a 5-level map does not fit them."""
    (tmp_path / "deep.csv").write_text("p1,1,2,3,4,0\np2,0,0,0,1,1\n")
    err = refused(capsys, hf_dir, tmp_path / "deep.csv", tmp_path / "gr")
    assert "vocab_size 27 is not 3 special tokens + 5 levels" in err and "does not split into 5 equal ranges" in err
