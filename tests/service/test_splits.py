"""Traffic splits: over 1,000 users each model's share is within 3 points of its weight, a user always lands on
the same side (in this router and in any other: the hash is stable), two splits divide users independently, and
moving weight moves only the users it must; the flag and file forms, and what they refuse."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from grserve.service.splits import Split, by_name, load_splits, parse_split

USERS = [f"user-{n}" for n in range(1000)]


@pytest.mark.parametrize("text,shares", [("home=gr-a:90,gr-b:10", {"gr-a": 0.9, "gr-b": 0.1}),
                                         ("feed=a:50,b:30,c:20", {"a": 0.5, "b": 0.3, "c": 0.2}),
                                         ("x=a:1,b:1", {"a": 0.5, "b": 0.5})])
def test_shares_over_1000_users_within_3_points(text, shares):
    split = parse_split(text)
    assert split.shares() == pytest.approx(shares)
    got = Counter(split.choose(u) for u in USERS)
    for model, share in shares.items():
        assert abs(got[model] / len(USERS) - share) <= 0.03, (model, got)


def test_a_user_always_lands_on_the_same_side():
    split = parse_split("home=gr-a:90,gr-b:10")
    first = {u: split.choose(u) for u in USERS}
    again = parse_split("home=gr-a:90,gr-b:10")  # another router, or this one restarted
    assert all(split.choose(u) == first[u] and again.choose(u) == first[u] for u in USERS)


def test_two_splits_divide_users_independently():
    """Half of each split's side lands on either side of the other, as independent halves would."""
    one, other = parse_split("one=a:50,b:50"), parse_split("other=a:50,b:50")
    pairs = Counter((one.choose(u), other.choose(u)) for u in USERS)
    assert all(abs(pairs[p] / len(USERS) - 0.25) <= 0.03 for p in [("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")])


def test_more_weight_to_the_canary_moves_only_users_to_it():
    before, after = parse_split("home=gr-a:90,gr-b:10"), parse_split("home=gr-a:80,gr-b:20")
    moved = [(before.choose(u), after.choose(u)) for u in USERS if before.choose(u) != after.choose(u)]
    assert moved and set(moved) == {("gr-a", "gr-b")}


def test_without_a_key_a_request_lands_by_weight():
    split = parse_split("home=a:75,b:25")
    got = Counter(split.choose(None) for _ in range(4000))
    assert set(got) == {"a", "b"} and got["a"] > got["b"]


def test_a_splits_file(tmp_path):
    (tmp_path / "s.toml").write_text('home = {gr-a = 90, gr-b = 10}\n[feed]\na = 1\nb = 3\n')
    (tmp_path / "s.yaml").write_text("home: {gr-a: 90, gr-b: 10}\n")
    (tmp_path / "s.json").write_text(json.dumps({"home": {"gr-a": 90, "gr-b": 10}}))
    toml = by_name(load_splits(tmp_path / "s.toml"))
    assert toml["home"] == parse_split("home=gr-a:90,gr-b:10") and toml["feed"].shares() == {"a": 0.25, "b": 0.75}
    assert load_splits(tmp_path / "s.yaml") == load_splits(tmp_path / "s.json") == [toml["home"]]


@pytest.mark.parametrize("text,match", [
    ("home", "expected NAME=MODEL:WEIGHT"), ("home=gr-a:90", "two models or more"),
    ("home=gr-a:90,gr-b", "'gr-b' is not MODEL:WEIGHT"), ("home=gr-a:90,gr-b:x", "'gr-b:x': the weight is not a"),
    ("home=gr-a:90,gr-b:0", "gr-b's weight must be a positive number"), ("home=a:1,a:2", "a appears twice"),
    ("home=home:1,b:1", "cannot send its own name"), ("ho me=a:1,b:1", "not a model name"),
])
def test_bad_splits_are_refused(text, match):
    with pytest.raises(ValueError, match=match):
        parse_split(text)


def test_splits_do_not_share_names_or_nest(tmp_path):
    with pytest.raises(ValueError, match="'home' is given twice"):
        by_name([parse_split("home=a:1,b:1"), parse_split("home=c:1,d:1")])
    with pytest.raises(ValueError, match="feed is a split itself"):
        by_name([parse_split("home=feed:1,b:1"), parse_split("feed=c:1,d:1")])
    (tmp_path / "bad.toml").write_text("home = 5\n")
    with pytest.raises(ValueError, match="bad.toml: split 'home': expected a table"):
        load_splits(tmp_path / "bad.toml")
    assert Split("home", (("a", 1), ("b", 2.5))).shares() == pytest.approx({"a": 1 / 3.5, "b": 2.5 / 3.5})
