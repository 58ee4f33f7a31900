"""`grserve catalog show|add|remove|disable|enable|rollback`: the live catalog from the command line.

Online (`--url`, the default) it calls a server's or a router's admin routes through the client. Offline
(`--model`, `--state-dir`) it applies the change with LiveCatalog itself, appending to the change log that a
server started over the same state directory replays: what that server then serves. The model directory is
only read. Items and ids come from arguments or files; an error about a value read from a file names its line."""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

DEFAULT_URL = "http://127.0.0.1:8000"
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}
EPILOG = """\
items file (add --file FILE, or - for stdin): JSON lines, one item per line as the HTTP API takes it
  ({"item_id": ..., "semantic_id": [c0, c1, c2]} or {"item_id": ..., "text": "..."}, each with an optional
  "title"); or CSV/TSV rows item_id,c0,c1,c2[,title] (one code per level of the catalog's SIDs: item_id,c0,c1
  for 2 levels, item_id,c0,c1,c2,c3 for 4), or with --text item_id,text[,title]. A first row whose first field
  is "item_id" is a header and says how many codes a row has (item_id,c0,c1,c2,c3,title); without one, a last
  field that is not an integer is the title (a title that is a number needs the header). The format comes from
  the extension (.jsonl, .csv, .tsv; anything else and stdin: JSON lines) unless --format says.
ids file (remove, disable, enable --file FILE, or - for stdin): one item id per line.
offline: --model and --state-dir name what `grserve serve --model DIR --state-dir DIR` loads (--state-dir's
  default is serve's: $XDG_CACHE_HOME/grserve/catalog/<model>). One writer per state directory: a server
  running over it would refuse its next change (409), so change a running server online.
exit status: 0 done; 1 the server answered an error (its message is printed), could not be reached, or another
  process writes the state directory; 2 a bad argument, or a bad line or field of a file, or (offline) a
  change the catalog refuses (the field is named)."""


@dataclass
class Read:
    """Values read from a file, with the line each came from."""
    name: str
    values: list
    lines: list[int]

    def at(self, param: str | None, message: str) -> str:
        """`message` prefixed with the line of the value that `param` (`items.3.semantic_id`, `disable.0`) names."""
        index = (param or "").split(".")[1:2]
        if index and index[0].isdigit() and int(index[0]) < len(self.lines):
            return f"{self.name} line {self.lines[int(index[0])]}: {message}"
        return message


def _open(path: str):
    return sys.stdin if path == "-" else open(path, newline="", encoding="utf-8")


def read_ids(path: str) -> Read:
    read = Read("stdin" if path == "-" else path, [], [])
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                read.values.append(line.strip())
                read.lines.append(n)
    return read


def read_items(path: str, fmt: str | None, text: bool) -> Read:
    """The items of a JSON-lines, CSV or TSV file (see EPILOG), as the API's item objects."""
    fmt = fmt or FORMATS.get(Path(path).suffix.lower(), "jsonl")
    if text and fmt == "jsonl":
        raise ValueError("--text is for CSV/TSV rows (item_id,text[,title]); a JSON line gives its own \"text\"")
    read = Read("stdin" if path == "-" else path, [], [])
    with _open(path) as f:
        if fmt == "jsonl":
            rows = ((n, _json_item(line, read.name, n)) for n, line in enumerate(f, 1) if line.strip())
        else:
            rows = _csv_rows(f, fmt, read.name, text)
        for n, item in rows:
            read.values.append(item)
            read.lines.append(n)
    if not read.values:
        raise ValueError(f"{read.name}: no items")
    return read


def _json_item(line: str, name: str, n: int) -> dict:
    try:
        item = json.loads(line)
    except ValueError as e:
        raise ValueError(f"{name} line {n}: not JSON ({e}); give --format csv or tsv for rows") from None
    if not isinstance(item, dict):
        raise ValueError(f"{name} line {n}: an item is a JSON object, got {line.strip()[:80]}")
    return item


def _csv_rows(f, fmt: str, name: str, text: bool):
    """(line, item) of every CSV/TSV row; a header row sets the number of codes (see EPILOG)."""
    from grserve.items.item_table import MIN_LEVELS  # here: numpy is not for every `grserve` command's start
    reader = csv.reader(f, delimiter="\t" if fmt == "tsv" else ",")
    codes = None  # codes per row: the header's, or told by each row
    for row in reader:
        if not row:
            continue
        if reader.line_num == 1 and row[0].strip() == "item_id":
            codes = len(row) - 1 - (row[-1].strip() == "title")
            continue
        if text:
            columns = ["item_id", "text"]
        else:
            count = codes if codes is not None else len(row) - 1 - (len(row) > 1 and not _is_code(row[-1]))
            columns = ["item_id", *(f"c{level}" for level in range(max(count, MIN_LEVELS)))]
        if not len(columns) <= len(row) <= len(columns) + 1:
            shape = ",".join(columns) if text or codes is not None else "item_id,c0,c1[,c2...]"
            raise ValueError(f"{name} line {reader.line_num}: expected {shape}[,title], got {len(row)} fields")
        yield reader.line_num, _csv_item(row, columns, name, reader.line_num)


def _is_code(value: str) -> bool:
    try:
        int(value)
        return True
    except ValueError:
        return False


def _csv_item(row: list[str], columns: list[str], name: str, n: int) -> dict:
    item: dict = {"item_id": row[0].strip()}
    if columns[1] == "text":
        item["text"] = row[1]
    else:
        item["semantic_id"] = [_code(row[k], columns[k], name, n) for k in range(1, len(columns))]
    if len(row) > len(columns):
        item["title"] = row[-1]
    return item


def _code(value: str, column: str, name: str, n: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} line {n}: {column}: not an integer code: {value!r}") from None


def _request(args) -> tuple[str, tuple, Read | None]:
    """The call (a method of both GRServeClient and LiveCatalog), its arguments, and the file they came from."""
    if args.catalog == "show":
        return "catalog", (), None
    if args.catalog == "rollback":
        return "rollback", (args.version,), None
    if args.catalog == "add":
        read = read_items(args.file, args.format, args.text)
        return "add_items", (read.values,), read
    if bool(args.ids) == bool(args.file):
        raise ValueError(f"{args.catalog}: give item ids or --file, not both" if args.ids else
                         f"{args.catalog}: give item ids, or --file FILE (- for stdin)")
    read = read_ids(args.file) if args.file else None
    ids = read.values if read else args.ids
    if args.catalog == "remove":
        return "remove_items", (ids,), read
    return "set_availability", ((ids, []) if args.catalog == "disable" else ([], ids)), read


def _offline_catalog(args):
    from grserve.bundle import SETTINGS_FILE, model_directory
    from grserve.catalog.change_log import default_state_dir
    from grserve.catalog.live import LiveCatalog
    from grserve.catalog.snapshot import CatalogSnapshot
    from grserve.items.item_table import ItemTable
    from grserve.server.model_spec import model_name
    model = model_directory(args.model)
    if not (model / SETTINGS_FILE).exists():
        raise FileNotFoundError(f"{model} is not a GR model directory: no {SETTINGS_FILE}")
    state_dir = args.state_dir or default_state_dir(model_name(args.model))
    # version 0 as a server builds it from the same table, so the log's fingerprint and replay agree
    return LiveCatalog(CatalogSnapshot.build(0, ItemTable.load(model)), state_dir, model)


def _summary(args, call: str, call_args: tuple) -> dict:
    if args.model or args.state_dir:
        catalog = _offline_catalog(args)
        return catalog.summary(None if call == "catalog" else getattr(catalog, call)(*call_args))
    from grserve.client import GRServeClient
    token = args.admin_token or os.environ.get("GRSERVE_ADMIN_TOKEN")
    with GRServeClient(args.url or DEFAULT_URL, timeout=args.timeout, admin_token=token) as client:
        return getattr(client, call)(*call_args)


def cmd_catalog(args) -> None:
    # imported here, as cli.py does, so that every other `grserve` command starts without them
    import httpx

    from grserve.catalog.change_log import LogConflict
    from grserve.client import GRServeError
    from grserve.errors import InvalidRequest
    if args.url and (args.model or args.state_dir):
        raise ValueError("--url changes a running server, --model/--state-dir a state directory: give one")
    call, call_args, read = _request(args)
    where = read.at if read else lambda param, message: message
    try:
        summary = _summary(args, call, call_args)
    except InvalidRequest as e:
        raise ValueError(where(e.param, str(e))) from None  # the CLI's own exit 2 (cli.main)
    except GRServeError as e:
        _fail(where(e.param, str(e)))
    except httpx.TransportError as e:
        _fail(f"cannot reach {args.url or DEFAULT_URL}: {e or type(e).__name__}")
    except LogConflict as e:
        _fail(str(e))
    print(json.dumps(summary, indent=2) if args.json else _describe(summary, args.catalog == "show"))


def _fail(message: str) -> NoReturn:
    print(f"grserve catalog: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _describe(summary: dict, with_changes: bool) -> str:
    lines = [f"catalog version {summary['version']}: {summary['items']} items ({summary['disabled']} disabled), "
             f"{summary['semantic_ids']} distinct semantic IDs"]
    if with_changes:
        lines.append("last changes:" if summary["changes"] else "no changes: the model directory's item table")
    for c in summary["changes"] if with_changes else ():
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c["at"]))
        what = f"to version {c['to_version']}" if c["kind"] == "rollback" else f"{c['items']} items"
        lines.append(f"  v{c['version']:<6}{at}  {c['kind']:<13}{what}")
    return "\n".join(lines)


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    online = p.add_argument_group("online: a server or a router")
    online.add_argument("--url", help=f"its address (default: {DEFAULT_URL})")
    online.add_argument("--admin-token", help="the server's admin token (default: $GRSERVE_ADMIN_TOKEN)")
    online.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for an answer "
                                                                    "(default: %(default)s)")
    offline = p.add_argument_group("offline: a model's state directory, no server")
    offline.add_argument("--model", help="GR model directory or shipped model's name, only read (default: the "
                                         "embedded MovieLens-100K model)")
    offline.add_argument("--state-dir", help="its change log's directory (default: grserve serve's for --model)")
    p.add_argument("--json", action="store_true", help="print the catalog's summary as the API's JSON")
    p.set_defaults(func=cmd_catalog)
    return p


def add_catalog_parser(sub) -> None:
    """The `catalog` subcommand and its own subcommands, under the main parser's `sub`."""
    catalog = sub.add_parser("catalog", help="show or change the live catalog, online (--url) or offline "
                                             "(--model, --state-dir)", description=__doc__, epilog=EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = catalog.add_subparsers(dest="catalog", required=True)
    common = {"parents": [_common()], "epilog": EPILOG, "formatter_class": argparse.RawDescriptionHelpFormatter}
    commands.add_parser("show", help="version, item counts and the last changes", **common)
    p = commands.add_parser("add", help="add items by SID or by text, or give existing ones a new SID", **common)
    p.add_argument("--file", required=True, help="items: JSON lines, CSV or TSV (see below); - for stdin")
    p.add_argument("--format", choices=("jsonl", "csv", "tsv"), help="the file's format (default: by its "
                                                                     "extension; stdin: jsonl)")
    p.add_argument("--text", action="store_true", help="CSV/TSV rows are item_id,text[,title]: SIDs come from "
                                                       "the model's codebooks")
    for name, text in (("remove", "remove items from the catalog"),
                       ("disable", "take items out of every answer (out of stock), keeping them"),
                       ("enable", "put disabled items back")):
        p = commands.add_parser(name, help=text, **common)
        p.add_argument("ids", nargs="*", metavar="ITEM_ID", help="item ids")
        p.add_argument("--file", help="item ids instead, one per line; - for stdin")
    p = commands.add_parser("rollback", help="a new version equal to an earlier one", **common)
    p.add_argument("--version", type=int, help="the version to restore (default: the one before the current)")
