"""`grserve catalog` in process: offline changes are exactly what a server over the same state directory then
loads (the oracle's own account, the reference beam search) with the model directory untouched; online, a
disabled item never comes back from a real server; bad files and fields are named, with their exit codes."""
from __future__ import annotations

import io
import json

import pytest

from grserve.bundle import GRBundle
from grserve.cli import main
from grserve.recommender import Recommender
from grserve.server.app import create_app
from grserve.server.config import ServerConfig
from tests.catalog.oracle import CatalogModel, assert_same_answer, reference_answer
from tests.conftest import make_bundle
from tests.server.conftest import free_port, running

TOKEN = "cli-admin-token"


def catalog(capsys, *args: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """`grserve catalog ARGS`: (exit status, stdout, stderr)."""
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        main(["catalog", *args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def files(directory) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_offline_changes_are_what_a_server_then_loads(tiny_bundle, tmp_path, capsys, monkeypatch):
    model_dir, state = tmp_path / "model", str(tmp_path / "state")
    tiny_bundle.save(model_dir)
    before = files(model_dir)
    offline = ("--model", str(model_dir), "--state-dir", state)
    expected = CatalogModel(tiny_bundle.table)
    i5 = list(expected.sids["i5"])

    (tmp_path / "items.csv").write_text(f'item_id,c0,c1,c2,title\nnew-a,{i5[0]},{i5[1]},{i5[2]},"A, the first"\n'
                                        'new-b,4,4,4\ni3,0,1,2\n')
    assert catalog(capsys, "add", "--file", str(tmp_path / "items.csv"), *offline)[0] == 0
    expected.add("new-a", i5).add("new-b", (4, 4, 4)).add("i3", (0, 1, 2))
    jsonl = '{"item_id": 7, "semantic_id": [1, 1, 1]}\n\n{"item_id": "new-c", "semantic_id": [2, 2, 2]}\n'
    assert catalog(capsys, "add", "--file", "-", *offline, stdin=jsonl, monkeypatch=monkeypatch)[0] == 0
    expected.add("7", (1, 1, 1)).add("new-c", (2, 2, 2))
    assert catalog(capsys, "disable", "i4", "new-a", *offline)[0] == 0
    at_v3 = expected.copy().disable("i4", "new-a")
    (tmp_path / "ids.txt").write_text("i6\n\ni7\n")
    assert catalog(capsys, "disable", "--file", str(tmp_path / "ids.txt"), *offline)[0] == 0
    assert catalog(capsys, "remove", "new-b", *offline)[0] == 0
    code, out, _ = catalog(capsys, "rollback", "--version", "3", *offline, "--json")
    assert code == 0 and json.loads(out)["version"] == 6

    code, out, _ = catalog(capsys, "show", *offline, "--json")
    shown = json.loads(out)
    assert [c["kind"] for c in shown["changes"]] == ["add", "add", "availability", "availability", "remove",
                                                    "rollback"]
    assert (shown["version"], shown["items"], shown["disabled"]) == (6, len(at_v3.sids), 2)

    recommender = Recommender(GRBundle.load(model_dir), state_dir=state)  # as `grserve serve --state-dir` loads
    try:
        current = recommender.catalog.current
        assert current.version == 6 and current.table.raw_ids == list(at_v3.sids)
        assert [tuple(c) for c in current.table.codes.tolist()] == list(at_v3.sids.values())
        assert {current.table.raw_ids[r] for r in current.disabled} == at_v3.disabled
        assert current.table.titles[current.table.row_of("new-a")] == "A, the first"
        got = recommender.recommend(["i5", "i9"], top_n=5, beam_width=16)
        assert_same_answer([(i.item_id, i.score) for i in got.items],
                           reference_answer(tiny_bundle, at_v3, ["i5", "i9"], 5, 16))
    finally:
        recommender.close()
    assert files(model_dir) == before


def test_rows_of_four_codes_on_a_four_level_catalog(tmp_path, capsys):
    """A row has as many codes as the catalog's SIDs; a header says so, a last field that is no integer is a
    title, and with a header a title may be a number."""
    bundle = make_bundle(num_items=80, codebook_size=4, seed=2, levels=4)
    model_dir, state = tmp_path / "model", str(tmp_path / "state")
    bundle.save(model_dir)
    offline = ("--model", str(model_dir), "--state-dir", state)
    (tmp_path / "plain.csv").write_text("new-a,1,2,3,0,Sofa\nnew-b,0,0,0,0\n")
    (tmp_path / "titled.tsv").write_text("item_id\tc0\tc1\tc2\tc3\ttitle\nnew-c\t3\t3\t3\t3\t1984\n")
    for name in ("plain.csv", "titled.tsv"):
        assert catalog(capsys, "add", "--file", str(tmp_path / name), *offline)[0] == 0
    expected = CatalogModel(bundle.table).add("new-a", (1, 2, 3, 0)).add("new-b", (0, 0, 0, 0))
    expected.add("new-c", (3, 3, 3, 3))
    (tmp_path / "short.csv").write_text("new-d,1,2,3\n")
    code, _, err = catalog(capsys, "add", "--file", str(tmp_path / "short.csv"), *offline)
    assert code == 2 and "short.csv line 1: items.0.semantic_id: must be 4 integer codes in [0, 4)" in err
    recommender = Recommender(GRBundle.load(model_dir), state_dir=state)
    try:
        table = recommender.catalog.current.table
        assert [tuple(c) for c in table.codes.tolist()] == list(expected.sids.values())
        assert [table.titles[table.row_of(i)] for i in ("new-a", "new-b", "new-c")] == ["Sofa", None, "1984"]
        got = recommender.recommend(["new-a", "i3"], top_n=5, beam_width=16)
        assert_same_answer([(i.item_id, i.score) for i in got.items],
                           reference_answer(bundle, expected, ["new-a", "i3"], 5, 16))
    finally:
        recommender.close()


@pytest.fixture(scope="module")
def server(tiny_bundle):
    config = ServerConfig.of(max_beam_width=32, default_timeout_ms=30_000, admin_token=TOKEN)
    recommender = Recommender(tiny_bundle, config.engine)
    with running(create_app(config, recommender)) as url:
        yield url, recommender


def test_online_disable_is_never_recommended(server, capsys, monkeypatch):
    url, recommender = server
    histories = [[], ["i1"], ["i2", "i3"], ["i8", "i9", "i10"]]
    top = recommender.recommend([], top_n=1, beam_width=16).items[0].item_id
    code, out, _ = catalog(capsys, "disable", top, "--url", url, "--admin-token", TOKEN)
    assert code == 0 and out.startswith("catalog version 1:") and "(1 disabled)" in out
    for history in histories:
        answer = recommender.recommend(history, top_n=16, beam_width=16)
        assert answer.catalog_version == 1 and top not in [i.item_id for i in answer.items]

    monkeypatch.setenv("GRSERVE_ADMIN_TOKEN", TOKEN)
    code, out, _ = catalog(capsys, "show", "--url", url, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["version"] == 1 and shown["disabled"] == 1
    assert shown["changes"][-1]["kind"] == "availability"
    code, out, _ = catalog(capsys, "show", "--url", url)
    assert code == 0 and "availability" in out.splitlines()[-1]


def test_online_errors_print_the_servers_message(server, tmp_path, capsys):
    url = server[0]
    code, _, err = catalog(capsys, "show", "--url", url, "--admin-token", "wrong")
    assert code == 1 and err.startswith("grserve catalog: error: HTTP 401")
    (tmp_path / "ids.txt").write_text("i2\nnope\n")
    code, _, err = catalog(capsys, "enable", "--file", str(tmp_path / "ids.txt"), "--url", url,
                           "--admin-token", TOKEN)
    assert code == 1 and "ids.txt line 2: HTTP 400: enable.1: item id 'nope' is not in the catalog" in err
    (tmp_path / "items.csv").write_text("a,1,2,3\nb,1,2,9\n")
    code, _, err = catalog(capsys, "add", "--file", str(tmp_path / "items.csv"), "--url", url,
                           "--admin-token", TOKEN)
    assert code == 1 and "items.csv line 2: HTTP 400: items.1.semantic_id: must be 3 integer codes in [0, 5)" in err
    code, _, err = catalog(capsys, "show", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "cannot reach http://127.0.0.1:" in err


BAD_FILES = [  # file name, its text, extra flags, the error's words
    ("items.csv", "a,1,2,3\nb,1,x,3\n", (), "items.csv line 2: c1: not an integer code: 'x'"),
    ("items.tsv", "a\t1\t2\t3\nb\t1\n", (), "items.tsv line 2: expected item_id,c0,c1[,c2...][,title], got 2 fields"),
    ("items.csv", "item_id,c0,c1,c2\na,1,2\n", (), "items.csv line 2: expected item_id,c0,c1,c2[,title], got 3 fields"),
    ("items.csv", "a,1,2,3,4\n", (), "items.csv line 1: items.0.semantic_id: must be 3 integer codes in [0, 5)"),
    ("items.jsonl", '{"item_id": "a", "semantic_id": [1, 2, 3]}\n{"item_id": "b",\n', (),
     "items.jsonl line 2: not JSON"),
    ("items.jsonl", '{"item_id": "a", "semantic_id": [1, 2, 3]}\n\n{"item_id": "b", "colour": 1}\n', (),
     "items.jsonl line 3: items.1.colour: unknown field"),
    ("items.jsonl", '[1, 2]\n', (), "items.jsonl line 1: an item is a JSON object"),
    ("items.csv", "a,1,2,7\n", (), "items.csv line 1: items.0.semantic_id: must be 3 integer codes in [0, 5)"),
    ("items.csv", "a,a red sofa\n", ("--text",), "items.csv line 1: items.0.text: this model was trained without "
                                                 "codebooks"),
    ("items.csv", "item_id,c0,c1,c2\n", (), "items.csv: no items"),
]


@pytest.mark.parametrize("name,text,flags,error", BAD_FILES)
def test_a_bad_file_names_its_line_and_field(tiny_model_dir, tmp_path, capsys, name, text, flags, error):
    (tmp_path / name).write_text(text)
    code, _, err = catalog(capsys, "add", "--file", str(tmp_path / name), *flags, "--model", tiny_model_dir,
                           "--state-dir", str(tmp_path / "state"))
    assert code == 2 and err.startswith("grserve catalog: error: ") and error in err
    assert err.count("\n") == 1 and not (tmp_path / "state").exists()


@pytest.mark.parametrize("args,error", [
    (("disable", "zz"), "disable.0: item id 'zz' is not in the catalog"),
    (("rollback",), "version: must be an earlier version, in [0, 0)"),
    (("remove",), "remove: give item ids, or --file FILE"),
    (("enable", "i1", "--file", "ids.txt"), "give item ids or --file, not both"),
    (("remove", "--file", "/nonexistent/ids.txt"), "No such file or directory"),
    (("show", "--url", "http://127.0.0.1:1"), "--url changes a running server"),
])
def test_bad_arguments_exit_2(tiny_model_dir, tmp_path, capsys, args, error):
    code, _, err = catalog(capsys, *args, "--model", tiny_model_dir, "--state-dir", str(tmp_path / "state"))
    assert code == 2 and error in err and err.count("\n") == 1


def test_offline_needs_a_model_directory(tmp_path, capsys):
    code, _, err = catalog(capsys, "show", "--model", str(tmp_path), "--state-dir", str(tmp_path / "state"))
    assert code == 2 and "is not a GR model directory" in err
