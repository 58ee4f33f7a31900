"""The change log: an acknowledged change survives the process, a torn last line (a kill mid-write) is
discarded so the catalog is the old version or the new one, never torn; a log of another item table, a corrupt
line, or a second writer is refused loudly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from grserve.catalog.change_log import LOG_NAME, LogConflict, fingerprint
from grserve.catalog.live import LiveCatalog
from grserve.catalog.snapshot import CatalogSnapshot
from tests.catalog.oracle import CatalogModel
from tests.conftest import make_bundle


def live(table, state_dir) -> LiveCatalog:
    return LiveCatalog(CatalogSnapshot.build(0, table), state_dir)


def content(catalog: LiveCatalog) -> tuple[dict, set]:
    """Item id → SID in catalog order, and the disabled ids, as the current snapshot holds them."""
    s = catalog.current
    return ({raw: tuple(int(c) for c in s.table.codes[row]) for row, raw in enumerate(s.table.raw_ids)},
            {s.table.raw_ids[row] for row in s.disabled})


def test_a_torn_last_line_is_discarded_and_truncated_away(tiny_bundle, tmp_path):
    catalog = live(tiny_bundle.table, tmp_path)
    catalog.add_items([{"item_id": "n", "semantic_id": [1, 1, 1]}])
    catalog.set_availability(disable=["i3"])
    log = tmp_path / LOG_NAME
    whole = log.read_bytes()
    line = json.dumps({"version": 3, "at": 0, "kind": "remove", "item_ids": ["i4"]}).encode() + b"\n"
    want = CatalogModel(tiny_bundle.table).add("n", (1, 1, 1)).disable("i3")
    for cut in (1, len(line) // 2, len(line) - 1):  # the next change's line, partly on disk
        log.write_bytes(whole + line[:cut])
        again = live(tiny_bundle.table, tmp_path)
        assert again.version == 2 and content(again) == (want.sids, want.disabled)
        assert log.read_bytes() == whole
    again.remove_items(["i4"])  # and the log goes on from there
    assert live(tiny_bundle.table, tmp_path).version == 3


def test_a_complete_but_unreadable_last_line_is_torn_too_and_any_other_is_corruption(tiny_bundle, tmp_path):
    catalog = live(tiny_bundle.table, tmp_path)
    catalog.set_availability(disable=["i1"])
    catalog.set_availability(disable=["i2"])
    log = tmp_path / LOG_NAME
    lines = log.read_bytes().split(b"\n")[:-1]
    log.write_bytes(b"\n".join(lines[:-1] + [b"\0\0\0\0"]) + b"\n")  # a power cut can leave zeros
    assert live(tiny_bundle.table, tmp_path).current.disabled == {1}
    log.write_bytes(b"\n".join([lines[0], b"{garbage", lines[1]]) + b"\n")
    with pytest.raises(ValueError, match="line 2 is corrupt"):
        live(tiny_bundle.table, tmp_path)


def test_a_log_of_another_item_table_is_refused(tiny_bundle, tmp_path):
    live(tiny_bundle.table, tmp_path).set_availability(disable=["i1"])
    other = make_bundle(num_items=60, codebook_size=5, seed=1).table
    assert fingerprint(other) != fingerprint(tiny_bundle.table)
    with pytest.raises(ValueError, match="another model"):
        live(other, tmp_path)


def test_a_second_writer_is_refused_not_interleaved(tiny_bundle, tmp_path):
    a, b = live(tiny_bundle.table, tmp_path), live(tiny_bundle.table, tmp_path)
    a.set_availability(disable=["i1"])
    with pytest.raises(LogConflict, match="another process"):
        b.set_availability(disable=["i2"])
    assert b.version == 0 and live(tiny_bundle.table, tmp_path).current.disabled == {1}


def test_nothing_is_written_until_a_change(tiny_bundle, tmp_path):
    live(tiny_bundle.table, tmp_path / "state")
    assert not (tmp_path / "state").exists()


CHILD = textwrap.dedent("""
    import sys
    from grserve.catalog.live import LiveCatalog
    from grserve.catalog.snapshot import CatalogSnapshot
    from tests.conftest import make_bundle
    catalog = LiveCatalog(CatalogSnapshot.build(0, make_bundle().table), sys.argv[1])
    for n in range(10_000):
        catalog.add_items([{"item_id": f"n{n}", "semantic_id": [n % 5, n // 5 % 5, n // 25 % 5]}])
        print(catalog.version, flush=True)
""")


def test_sigkill_while_changing_leaves_an_acknowledged_version(tiny_bundle, tmp_path):
    """A real process adding items as fast as it can, killed at a random moment: the catalog that comes back
    holds every change the process acknowledged, and at most the one it was writing, whole."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))  # the checkout: tests.conftest
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, env=env)
    acknowledged = 0
    while acknowledged < 30:
        acknowledged = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acknowledged = max([acknowledged] + [int(v) for v in proc.stdout.read().split()])
    catalog = live(tiny_bundle.table, tmp_path)
    assert acknowledged <= catalog.version <= acknowledged + 1
    want = CatalogModel(tiny_bundle.table)
    for n in range(catalog.version):
        want.add(f"n{n}", (n % 5, n // 5 % 5, n // 25 % 5))
    assert content(catalog) == (want.sids, set())
