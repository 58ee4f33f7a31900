"""`grserve import`: a GR model directory that `grserve serve` serves, from a Hugging Face causal LM trained
elsewhere and its item → semantic ID map (model/hf_import.py does the model's side).

The map is CSV or TSV rows `item_id,c0,c1,c2[,c3...][,title]` (a header row `item_id,c0,...[,title]` or none;
the rows are read as `grserve catalog add` reads them), JSON lines `{"item_id", "semantic_id", "title"?}`, or
xLLM's binary vocab records (int64 item_id + one int32 per level). Titles may also come from a file of
`item_id,title` rows. Every error names the file, the line or record, and the field; the exit status is 2."""
from __future__ import annotations

import argparse
import csv
import json
from dataclasses import asdict
from pathlib import Path

MAP_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".bin": "bin"}
EPILOG = """\
SID map (--sid-map): one row per item, each with the same number of codes (its levels; 2 or more):
  CSV/TSV   item_id,c0,c1,c2[,title]; a first row "item_id,c0,c1,c2[,title]" is a header (needed when a title
            is a number)
  JSON      one {"item_id": ..., "semantic_id": [c0, c1, c2], "title": ...} per line
  binary    xLLM's vocab records: int64 item_id, then int32 c0, c1, c2 (little-endian; --levels for other depths)
The format comes from the extension (.csv, .tsv, .jsonl, .bin) unless --format says.
The model's vocabulary must be grserve's layout: <pad> 0, <bos> 1, <eos> 2, then one range of codebook_size
tokens per level (vocab_size = 3 + levels x codebook_size), codes of level l at 3 + l x codebook_size + code.
Items may share a SID (each such SID answers with all of them); an item id appears once.
exit status: 0 written; 2 a bad argument, file, line or field (named), nothing written."""


def read_sid_map(path: str, fmt: str | None, levels: int | None):
    from grserve.catalog_cli import read_items
    from grserve.items.sid_map import XLLM_LEVELS, SIDMap
    fmt = fmt or MAP_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"--sid-map {path}: give --format (csv, tsv, jsonl or bin): the extension does not say")
    if fmt == "bin":
        return SIDMap.from_records(path, levels or XLLM_LEVELS)
    if levels is not None:
        raise ValueError("--levels is for binary records: a CSV, TSV or JSON row's codes say its depth")
    read = read_items(path, fmt, text=False)
    return SIDMap.from_items(read.name, read.values, read.lines)


def read_titles(path: str) -> list[tuple[str, str, int]]:
    """(item_id, title, line) of every `item_id,title` row of a CSV or TSV file, a header row skipped."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t" if path.endswith(".tsv") else ",")
        for row in reader:
            if not row or (reader.line_num == 1 and row[:2] == ["item_id", "title"]):
                continue
            if len(row) != 2:
                raise ValueError(f"{path} line {reader.line_num}: expected item_id,title, got {len(row)} fields")
            rows.append((row[0].strip(), row[1], reader.line_num))
    return rows


def cmd_import(args) -> None:
    from grserve.model.hf_import import import_model
    sids = read_sid_map(args.sid_map, args.format, args.levels)
    if args.titles:
        if sids.titles is not None:
            raise ValueError(f"--titles {args.titles}: {sids.name} has titles already: give them in one place")
        sids = sids.with_titles(args.titles, read_titles(args.titles))
    report = import_model(args.hf_model, sids, args.out, args.codebook_size, args.max_history_items,
                          args.dataset or Path(args.sid_map).stem)
    print(json.dumps(asdict(report), indent=2))


def add_import_parser(sub) -> None:
    p = sub.add_parser("import", help="build a GR model directory from a Hugging Face LlamaForCausalLM or "
                                      "Qwen3ForCausalLM and an item -> SID map", description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf-model", required=True, help="the Hugging Face model directory (config.json, safetensors)")
    p.add_argument("--sid-map", required=True, help="the item -> SID map (see below)")
    p.add_argument("--out", required=True, help="the GR model directory to write")
    p.add_argument("--format", choices=("csv", "tsv", "jsonl", "bin"), help="the SID map's format (default: by "
                                                                              "its extension)")
    p.add_argument("--levels", type=int, help="codes per SID of binary records (default: 3, xLLM's)")
    p.add_argument("--titles", help="item titles: a CSV or TSV file of item_id,title rows")
    p.add_argument("--codebook-size", type=int, help="codes per level (default: what the model's vocab_size "
                                                     "implies: (vocab_size - 3) / levels)")
    p.add_argument("--max-history-items", type=int, help="most history items in a prompt (default: 50, or what "
                                                         "the model's max_position_embeddings holds)")
    p.add_argument("--dataset", help="the dataset's name, kept in gr_config.json (default: the map's file name)")
    p.set_defaults(func=cmd_import)
