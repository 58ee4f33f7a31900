"""The title index against a plain Python filter over the item table: random catalogs with odd titles (mixed case,
casefolding that changes length, NUL, none at all), queries that are substrings, ids, spans across two titles,
padded, or found nowhere; every limit."""
from __future__ import annotations

import numpy as np
import pytest

from grserve.items.item_table import ItemTable
from grserve.items.title_index import TitleIndex

WORDS = ["Star", "wars", "STRASSE", "Straße", "toy", "Story", "ǅemal", "the", "İstanbul", "a\x00b", "x", "  "]


def oracle(table: ItemTable, query: str, limit: int) -> tuple[list[int], bool]:
    """The module's rule, written out: the item whose raw id is the query, then every titled item whose casefolded
    title (a NUL in it read as a space) contains the casefolded query, in row order."""
    query = query.strip()
    titles = list(table.titles) if table.titles is not None else [None] * len(table)
    by_id = [row for row, raw in enumerate(table.raw_ids) if raw == query]
    by_title = [row for row, title in enumerate(titles)
                if title is not None and query.casefold() in title.replace("\x00", " ").casefold() and row not in by_id]
    found = by_id + by_title
    return found[:limit], len(found) > limit


def random_table(rng: np.random.Generator, n: int, untitled: float) -> ItemTable:
    titles = [None if rng.random() < untitled else
              " ".join(rng.choice(WORDS, size=rng.integers(1, 4))) for _ in range(n)]
    raw_ids = [str(i) if i % 3 else f"Star{i}" for i in range(n)]  # some ids look like title words
    codes = rng.integers(0, 4, size=(n, 3))
    return ItemTable(4, codes, raw_ids, titles)


def queries(rng: np.random.Generator, table: ItemTable) -> list[str]:
    titles = [t for t in (table.titles or []) if t]
    out = ["star", "STAR", "strasse", "ß", "İ", "the story", "nowhere at all", " toy ", "Star3", "3", "b", "a b"]
    for _ in range(30):
        if titles:
            t = titles[rng.integers(len(titles))]
            a = int(rng.integers(len(t)))
            piece = t[a:a + int(rng.integers(1, 8))]
            out.append(piece.upper() if rng.random() < 0.3 else piece)
        if len(titles) > 1:  # the end of one title and the start of the next: must not match across them
            i = int(rng.integers(len(titles) - 1))
            out.append(titles[i][-2:] + titles[i + 1][:2])
        out.append(table.raw_ids[int(rng.integers(len(table)))])
    return [q.replace("\x00", "") for q in out if q.replace("\x00", "").strip()]


@pytest.mark.parametrize("seed", range(6))
def test_search_equals_a_plain_filter(seed):
    rng = np.random.default_rng(seed)
    table = random_table(rng, int(rng.integers(1, 300)), untitled=[0.0, 0.2, 0.9][seed % 3])
    index = TitleIndex(table)
    for query in queries(rng, table):
        for limit in (1, 3, 20, len(table) + 1):
            assert index.search(query, limit) == oracle(table, query, limit), (query, limit)


def test_a_table_without_titles_is_searched_by_id_only():
    table = ItemTable(4, np.zeros((5, 3), dtype=np.int32), ["a", "b", "ab", "c", "d"])
    index = TitleIndex(table)
    assert index.search("ab", 10) == ([2], False)
    assert index.search("a", 10) == ([0], False)
    assert index.search("zz", 10) == ([], False)


def test_a_changed_table_has_its_own_rows():
    """A version's table shares pools with the one before (item_table.py): the index reads this table's rows."""
    rng = np.random.default_rng(7)
    base = random_table(rng, 40, untitled=0.1)
    changed = base.with_items(["new-1", "3", "new-2"], rng.integers(0, 4, size=(3, 3)),
                              ["Brand new star", "Renamed story", None])
    for table in (base, changed):
        index = TitleIndex(table)
        for query in ("star", "story", "new-2", "3", "renamed"):
            assert index.search(query, 100) == oracle(table, query, 100)
    assert TitleIndex(changed).search("new-2", 5) == ([changed.row_of("new-2")], False)
