"""The `grserve` command: serve, recommend, train, eval, synth, router, bench, catalog, import."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields


def _bundle(args):
    from grserve.bundle import GRBundle
    return GRBundle.load(args.model, device=args.device)


def cmd_serve(args) -> None:
    from grserve.server.config import ServerConfig
    from grserve.server.serve import run_server
    overrides = {name: getattr(args, name) for name in ServerConfig.settings()}
    run_server(ServerConfig.load(args.config, **overrides))


def _ids(text: str | None) -> list[str] | None:
    return None if text is None else [i.strip() for i in text.split(",") if i.strip()]


def cmd_recommend(args) -> None:
    from grserve.recommender import Recommender
    result = Recommender(_bundle(args)).recommend(_ids(args.history), args.top_n, args.beam_width,
                                                   not args.keep_history, _ids(args.exclude),
                                                   _ids(args.allow), reference=args.reference)
    print(json.dumps({"items": [asdict(i) for i in result.items], "warnings": result.warnings,
                      "usage": {"prompt_tokens": result.prompt_tokens, "beam_width": args.beam_width}},
                     indent=2))


def cmd_train(args) -> None:
    from grserve.data.loading import load_dataset
    from grserve.data.recipes import recipe_for
    from grserve.data.training import TrainConfig, train
    dataset = load_dataset(args.dataset, args.item_meta)
    if args.codebooks_only:
        return _derive_codebooks(dataset, args.out)
    recipe = recipe_for(dataset)
    if recipe:
        print(f"{dataset.name}'s recipe (flags override it): {json.dumps(recipe)}", file=sys.stderr)
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    report = train(dataset, TrainConfig(**{**recipe, **overrides}), args.out)
    print(json.dumps({"out": args.out, "best_epoch": report["best_epoch"], "test": report["test"],
                      "seconds": report["seconds"]}, indent=2))


def _derive_codebooks(dataset, out: str) -> None:
    from grserve.data.training import derive_codebooks
    from grserve.items.item_table import ItemTable
    codebooks, reproduced = derive_codebooks(dataset, ItemTable.load(out), progress=True)
    codebooks.save(out)
    print(json.dumps({"out": out, "encoder": codebooks.encoder, "shape": list(codebooks.centroids.shape),
                      "reproduced": reproduced}, indent=2))


def cmd_eval(args) -> None:
    from grserve.data.anchors import anchors_for
    from grserve.data.evaluation import evaluate, round_metrics
    from grserve.data.loading import load_dataset
    from grserve.data.split import leave_one_out
    from grserve.recommender import Recommender
    bundle = _bundle(args)
    try:
        dataset = load_dataset(args.dataset or bundle.settings.dataset, args.item_meta)
    except FileNotFoundError as e:
        if args.dataset:
            raise
        # a model ships without its interactions (Amazon Beauty's are not the project's to ship)
        raise SystemExit(f"{e}: the model was trained on {bundle.settings.dataset!r}; give that dataset with "
                         f"--dataset PATH (e.g. ../shared/data/beauty/Beauty.txt)") from None
    # Map the dataset's catalog onto the model's item table by the dataset's own item ids.
    to_row = [bundle.table.row_of(i) for i in dataset.item_ids]
    sequences = {u: [to_row[r] for r in s if to_row[r] is not None] for u, s in dataset.sequences.items()}
    split = leave_one_out(sequences)
    examples = split.test if args.split == "test" else split.valid
    if args.users:
        examples = examples[:args.users]
    from grserve.engine.gr.config import EngineConfig
    recommender = Recommender(bundle, EngineConfig(quantization=args.quantization))
    result = round_metrics(evaluate(recommender, examples, args.beam_width, progress=not args.json))
    if args.json:
        print(json.dumps({"model": result["model"], "popularity": result["popularity"]}))
        return
    rows = [(system, result[system]) for system in ("model", "popularity")]
    if args.split == "test":  # the published numbers are test-split numbers
        rows += anchors_for(dataset)
    width = max(len(name) for name, _ in rows) + 2
    print(" " * width + "".join(f"{k:>11s}" for k in result["model"]))
    for name, metrics in rows:
        print(f"{name:{width}s}" + "".join(f"{metrics[k]:11.4f}" if k in metrics else f"{'-':>11s}"
                                           for k in result["model"]))
    print(f"users={result['users']} beam_width={result['beam_width']} split={args.split}")


def cmd_synth(args) -> None:
    from grserve.items.synthetic import write_synthetic
    out = write_synthetic(args.out, num_items=args.items, num_layers=args.layers, hidden_size=args.hidden,
                          num_heads=args.heads, num_kv_heads=args.kv_heads, codebook_size=args.codebook_size,
                          levels=args.levels, seed=args.seed)
    print(json.dumps({"out": str(out), "items": args.items, "layers": args.layers, "hidden": args.hidden}))


def cmd_router(args) -> None:
    import uvicorn

    from grserve.service.router import create_router_app
    tokenizer = None
    if args.tokenizer:
        from grserve.model.tokenizer import load_tokenizer
        tokenizer = load_tokenizer(args.tokenizer)
    from grserve.service.splits import load_splits, parse_split
    splits = [parse_split(s) for s in args.split or []] + (load_splits(args.splits) if args.splits else [])
    uvicorn.run(create_router_app(args.etcd, args.policy, args.retries, tokenizer=tokenizer, splits=splits),
                host=args.host, port=args.port, log_level="info")


def _with_model(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--model", help="GR model directory, or the name of one shipped in the package: ml-100k "
                                        "(the default) or beauty")
    p.add_argument("--device", default="cpu", help="torch device to run the model on: cpu, cuda or cuda:N "
                                                   "(default: %(default)s)")
    return p


def _config_help(text: str, default) -> str:
    """A config field's help for argparse ('%' is its format character), with the default when there is one
    (an unset one is explained by the text itself)."""
    return text.replace("%", "%%") + ("" if default is None else f" (default: {default})")


def _add_serve(sub) -> None:
    from grserve.server.config import ServerConfig
    p = sub.add_parser("serve", help="serve a GR model (and an LLM) over HTTP")
    p.add_argument("--config", help="TOML or YAML file of settings (the flags' names, with underscores); "
                                    "flags override it")
    for title, owned in ServerConfig.groups().items():
        group = p.add_argument_group(title + " settings")
        for f in owned:
            flag, text = "--" + f.name.replace("_", "-"), _config_help(ServerConfig.help_text(f.name), f.default)
            if f.type.startswith("bool"):
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
            elif "list[" in f.type:  # repeated: --model a=DIR --model b=DIR
                group.add_argument(flag, action="append", default=None, metavar=f.name.upper(), help=text)
            else:
                # annotations are strings here (`from __future__ import annotations`): "float | None" is a float flag
                kind = {"int": int, "float": float}.get(f.type.replace(" | None", ""), str)
                group.add_argument(flag, type=kind, default=None, help=text)
    p.set_defaults(func=cmd_serve)


def _add_recommend(sub) -> None:
    p = _with_model(sub.add_parser("recommend", help="top-N items for one history, as JSON"))
    p.add_argument("--history", default="", help="comma-separated item ids, oldest first (default: none, the "
                                                 "model's prior)")
    p.add_argument("--top-n", type=int, default=10, help="items to return (default: %(default)s)")
    p.add_argument("--beam-width", type=int, default=64, help="beams searched; at least --top-n "
                                                             "(default: %(default)s)")
    p.add_argument("--keep-history", action="store_true", help="allow items of the history in the answer")
    p.add_argument("--exclude", help="comma-separated item ids never to return")
    p.add_argument("--allow", help="comma-separated item ids: return only these")
    p.add_argument("--reference", action="store_true", help="run the slow reference beam search instead")
    p.set_defaults(func=cmd_recommend)


def _add_train(sub) -> None:
    from grserve.data.training import TrainConfig
    p = sub.add_parser("train", help="build SIDs and train a GR model on a dataset (one with a recipe, "
                                               "Amazon Beauty, starts from it: grserve/data/recipes.py)")
    p.add_argument("--dataset", default="ml-100k", help="'ml-100k', a RecBole atomic directory or a sequence file "
                                                        "(default: %(default)s)")
    p.add_argument("--item-meta", help="JSON of item descriptions for a sequence file (their texts make the SIDs)")
    p.add_argument("--out", required=True, help="directory to write the trained model and its training report to")
    p.add_argument("--codebooks-only", action="store_true",
                   help="train nothing: write the codebooks of the model already in --out, derived from its item "
                        "table and the dataset's texts (for models trained before codebooks were saved)")
    for f in fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None,
                       help=_config_help(f.metadata["help"], f.default))
    p.set_defaults(func=cmd_train)


def _add_eval(sub) -> None:
    from grserve.model.quantized import QUANTIZATIONS
    p = _with_model(sub.add_parser("eval", help="Recall/NDCG@5,10 on the leave-one-out split vs popularity"))
    p.add_argument("--dataset", help="dataset to evaluate on (default: the dataset the model was trained on)")
    p.add_argument("--item-meta", help="JSON of item descriptions for a sequence file")
    p.add_argument("--split", choices=("test", "valid"), default="test", help="which held-out item each user is "
                                                                              "scored on (default: %(default)s)")
    p.add_argument("--beam-width", type=int, default=50, help="beams searched per user (default: %(default)s)")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="none",
                   help="the model's linear weights, as `grserve serve --quantization` (default: %(default)s)")
    p.add_argument("--users", type=int, default=0, help="evaluate only the first N users (default: 0, all)")
    p.add_argument("--json", action="store_true", help="print the model's and popularity's metrics as one JSON "
                                                       "line instead of a table")
    p.set_defaults(func=cmd_eval)


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write a random-weight GR model and a random catalog (HF format)")
    p.add_argument("--items", type=int, required=True, help="items in the random catalog")
    p.add_argument("--layers", type=int, default=4, help="transformer layers (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=128, help="transformer hidden size (default: %(default)s)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default: %(default)s)")
    p.add_argument("--kv-heads", type=int, default=2, help="key/value heads (default: %(default)s)")
    p.add_argument("--codebook-size", type=int, default=256, help="codes per SID level (default: %(default)s)")
    p.add_argument("--levels", type=int, default=3, help="codes per SID, 2 or more (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the catalog (default: %(default)s)")
    p.add_argument("--out", required=True, help="directory to write the model to")
    p.set_defaults(func=cmd_synth)


def _add_router(sub) -> None:
    p = sub.add_parser("router", help="route the public API over the instances registered in etcd")
    p.add_argument("--etcd", required=True, help="etcd URL, e.g. http://127.0.0.1:2379")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    p.add_argument("--policy", choices=("round-robin", "least-loaded", "cache-aware"), default="least-loaded",
                   help="how an instance is chosen for each request (default: %(default)s)")
    p.add_argument("--retries", type=int, default=2, help="other instances tried after a failure "
                                                          "(default: %(default)s)")
    p.add_argument("--tokenizer", help="the served LLM's model directory: cache-aware routing of text prompts")
    p.add_argument("--split", action="append", metavar="NAME=MODEL:WEIGHT,...",
                   help="a traffic split (repeatable): requests for model NAME go to the models listed in "
                        "proportion to their weights, each user (`user`, else X-Session-Id) always to the same one, "
                        "e.g. home=gr-a:90,gr-b:10")
    p.add_argument("--splits", metavar="FILE", help="traffic splits from a TOML, YAML or JSON file: one table per "
                                                   "split, NAME = {MODEL = WEIGHT, ...}")
    p.set_defaults(func=cmd_router)


def build_parser() -> argparse.ArgumentParser:
    from grserve.bench.cli import add_bench_parser
    from grserve.catalog_cli import add_catalog_parser
    from grserve.import_cli import add_import_parser
    parser = argparse.ArgumentParser(prog="grserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_serve, _add_recommend, _add_train, _add_eval, _add_synth, _add_router):
        add(sub)
    add_bench_parser(sub, _with_model)
    add_catalog_parser(sub)
    add_import_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"grserve {args.command}: error: {e}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
