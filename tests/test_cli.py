"""The `grserve` command end to end, in subprocesses, on the tiny model and on the embedded default; every flag
has a help text."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest

from grserve.bundle import DEFAULT_MODEL_DIR
from grserve.cli import build_parser, main
from grserve.recommender import Recommender


def grserve(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grserve", *args], capture_output=True, text=True,
                          check=check, timeout=600)


def test_recommend_json_equals_the_python_api(tiny_bundle, tiny_model_dir):
    out = json.loads(grserve("recommend", "--model", tiny_model_dir, "--history", "i1,i2,zzz",
                             "--top-n", "3", "--beam-width", "8").stdout)
    direct = Recommender(tiny_bundle).recommend(["i1", "i2", "zzz"], 3, 8)
    assert [i["item_id"] for i in out["items"]] == [i.item_id for i in direct.items]
    assert any("zzz" in w for w in out["warnings"])


@pytest.mark.parametrize("levels", ["3", "4"])
def test_synth_model_serves_and_engine_equals_reference(tmp_path, levels):
    out = tmp_path / "synth"
    grserve("synth", "--items", "3000", "--layers", "1", "--hidden", "32", "--codebook-size", "32",
            "--levels", levels, "--out", str(out))
    args = ["recommend", "--model", str(out), "--history", "5,17,2999", "--top-n", "10", "--beam-width", "32",
            "--exclude", "1,2,3"]
    fast = json.loads(grserve(*args).stdout)
    slow = json.loads(grserve(*args, "--reference").stdout)
    assert [i["item_id"] for i in fast["items"]] == [i["item_id"] for i in slow["items"]]
    assert len(fast["items"]) == 10 and not {"1", "2", "3", "5", "17", "2999"} & {i["item_id"] for i in fast["items"]}
    assert all(len(i["semantic_id"]) == int(levels) for i in fast["items"])
    assert [i["score"] for i in fast["items"]] == pytest.approx([i["score"] for i in slow["items"]], abs=2e-4)


def test_bad_arguments_are_a_clear_error(tiny_model_dir):
    r = grserve("recommend", "--model", tiny_model_dir, "--top-n", "0", check=False)
    assert r.returncode == 2 and "top_n" in r.stderr and "Traceback" not in r.stderr
    r = grserve("recommend", "--model", "/nonexistent/model", check=False)
    assert r.returncode == 2 and "not a GR model directory" in r.stderr


def test_serve_flags_are_typed():
    """An optional number (`float | None` in ServerConfig) is parsed as a number, not passed on as text."""
    r = grserve("serve", "--target-step-ms", "abc", check=False)
    assert r.returncode == 2 and "invalid float value" in r.stderr
    r = grserve("serve", "--target-step-ms", "-5", "--port", "1", check=False)
    assert r.returncode == 2 and "target_step_ms" in r.stderr


def test_embedded_default_model_recommends_movielens_items():
    out = json.loads(grserve("recommend", "--history", "1,50,181", "--top-n", "10").stdout)
    assert len(out["items"]) == 10
    titles = {i["item_id"]: i["title"] for i in out["items"]}
    assert not {"1", "50", "181"} & titles.keys()  # the history is excluded by default
    assert all(t for t in titles.values())
    assert out["warnings"] == []
    assert [i["score"] for i in out["items"]] == sorted((i["score"] for i in out["items"]), reverse=True)
    # The prior (empty history) is allowed too.
    assert len(json.loads(grserve("recommend", "--top-n", "5").stdout)["items"]) == 5


def test_embedded_model_beats_popularity_on_movielens():
    """The README's claim, on the first 300 test users (the full split runs in `grserve eval`)."""
    assert DEFAULT_MODEL_DIR.exists()
    out = json.loads(grserve("eval", "--json", "--users", "300").stdout)
    assert set(out) == {"model", "popularity"}
    assert set(out["model"]) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    assert out["model"]["ndcg@10"] > out["popularity"]["ndcg@10"]


def test_eval_table_prints_the_published_anchors_on_the_test_split():
    rows = {line.split("  ")[0]: line.split()[-1] for line in
            grserve("eval", "--users", "30").stdout.splitlines()[1:-1]}
    assert rows.keys() == {"model", "popularity", "RecBole GRU4Rec", "RecBole SASRec"}
    assert rows["RecBole GRU4Rec"] == "0.0594"  # NDCG@10, the last column
    # Validation numbers are not comparable with the published test numbers: no anchors there.
    valid = grserve("eval", "--users", "30", "--split", "valid").stdout
    assert "RecBole" not in valid and "split=valid" in valid


def _options(parser: argparse.ArgumentParser, path: str = "grserve"):
    """(command path, option string, help) of every option under `parser`, subcommands included; and
    (command path, help) of every subcommand."""
    options, commands = [], []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in action._choices_actions}
            for name, child in action.choices.items():
                commands.append((f"{path} {name}", helps.get(name)))
                child_options, child_commands = _options(child, f"{path} {name}")
                options += child_options
                commands += child_commands
        elif action.option_strings and not isinstance(action, argparse._HelpAction):
            options.append((path, action.option_strings[-1], action.help))
    return options, commands


def test_every_flag_of_every_subcommand_says_what_it_does():
    options, commands = _options(build_parser())
    # the walk reaches the generated flags, the hand-written ones and bench's subcommands
    assert {("grserve serve", "--target-step-ms"), ("grserve serve", "--block-size"), ("grserve train", "--lr"),
            ("grserve eval", "--json"), ("grserve bench gr", "--slo-ms"),
            ("grserve bench attention", "--device")} <= {(c, o) for c, o, _ in options}
    assert len(options) > 100
    undocumented = [(c, o, h) for c, o, h in options
                    if not h or h == argparse.SUPPRESS or not re.sub(r"\(?default: [^)]*\)?", "", h).strip(" .;,")]
    assert undocumented == []
    assert [c for c, h in commands if not h] == []


def test_help_shows_each_default_beside_what_the_flag_does(capsys):
    options = {(c, o): h for c, o, h in _options(build_parser())[0]}
    assert options["grserve serve", "--max-batch-rows"] == (
        "most beam rows in one GR batch: requests x their padded beam width (default: 2048)")
    assert options["grserve serve", "--device"].endswith("(both engines) (default: cpu)")
    assert "5%% of the steps" in options["grserve train", "--lr"]  # argparse's escape: printed as "5%"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    printed = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--lr LR peak AdamW learning rate (linear warm-up over 5% of the steps, then cosine decay) " \
           "(default: 0.002)" in printed
