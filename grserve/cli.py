"""The `grserve` command: serve, recommend, train, eval, synth, bench."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields
from pathlib import Path


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
    from grserve.data.training import TrainConfig, train
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    report = train(load_dataset(args.dataset, args.item_meta), TrainConfig(**overrides), args.out)
    print(json.dumps({"out": args.out, "best_epoch": report["best_epoch"], "test": report["test"],
                      "seconds": report["seconds"]}, indent=2))


def cmd_eval(args) -> None:
    from grserve.data.evaluation import evaluate, round_metrics
    from grserve.data.loading import load_dataset
    from grserve.data.split import leave_one_out
    from grserve.recommender import Recommender
    bundle = _bundle(args)
    dataset = load_dataset(args.dataset or bundle.settings.dataset, args.item_meta)
    # Map the dataset's catalog onto the model's item table by the dataset's own item ids.
    to_row = [bundle.table.row_of(i) for i in dataset.item_ids]
    sequences = {u: [to_row[r] for r in s if to_row[r] is not None] for u, s in dataset.sequences.items()}
    split = leave_one_out(sequences)
    examples = split.test if args.split == "test" else split.valid
    if args.users:
        examples = examples[:args.users]
    result = round_metrics(evaluate(Recommender(bundle), examples, args.beam_width,
                                    progress=not args.json))
    if args.json:
        print(json.dumps({"model": result["model"], "popularity": result["popularity"]}))
        return
    print(f"{'':12s}" + "".join(f"{k:>11s}" for k in result["model"]))
    for system in ("model", "popularity"):
        print(f"{system:12s}" + "".join(f"{v:11.4f}" for v in result[system].values()))
    print(f"users={result['users']} beam_width={result['beam_width']} split={args.split}")


def cmd_synth(args) -> None:
    from grserve.items.synthetic import write_synthetic
    out = write_synthetic(args.out, num_items=args.items, num_layers=args.layers, hidden_size=args.hidden,
                          num_heads=args.heads, num_kv_heads=args.kv_heads, codebook_size=args.codebook_size,
                          seed=args.seed)
    print(json.dumps({"out": str(out), "items": args.items, "layers": args.layers, "hidden": args.hidden}))


def cmd_bench_attention(args) -> None:
    from grserve.bench.attention import run_attention_bench
    from grserve.bench.engine_vs_reference import run_engine_bench
    result = {"attention": run_attention_bench(prompt_len=args.prompt_len, beam_width=args.beam_width),
              "engine_vs_reference": run_engine_bench(_bundle(args), beam_width=args.engine_beam_width,
                                                      requests=args.requests)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


def cmd_bench_gr(args) -> None:
    from grserve.bench.gr_bench import BenchOptions, run_bench, save
    from grserve.bench.report import write_report
    opts = BenchOptions(slo_ms=args.slo_ms, quick=args.quick, vllm_python=args.vllm_python, out_dir=args.out,
                        workloads=args.workloads, repeats=args.repeats)
    if args.quick:  # workload (a) only, short runs: under a minute
        opts.duration_s, opts.agreement_requests, opts.baseline_requests, opts.repeats = 2.0, 4, 2, 1
    run = run_bench(opts)
    path = save(run, opts.out_dir, "-quick" if args.quick else "")
    files = write_report(path)
    if args.quick:
        print(json.dumps(run["headline"]))
    else:
        print(json.dumps({"json": str(path), "files": [str(f) for f in files], **run["headline"]}, indent=2))


def cmd_bench_llm(args) -> None:
    from grserve.bench.gr_bench import save
    from grserve.bench.llm_bench import run_llm_bench
    run = run_llm_bench(requests=args.requests, prompt_len=args.prompt_len, max_tokens=args.max_tokens,
                        vllm_python=args.vllm_python, repeats=args.repeats)
    path = save(run, args.out)
    print(json.dumps({"json": str(path), "grserve_tokens_per_s": run["grserve"]["output_tokens_per_s"],
                      "hf_tokens_per_s": run["hf"]["output_tokens_per_s"],
                      "vllm_tokens_per_s": run["vllm"]["output_tokens_per_s"] if run["vllm"] else None,
                      "ratio_vs_hf": run["ratio_tokens_per_s_vs_hf"], "ratio_vs_vllm": run["ratio_tokens_per_s_vs_vllm"],
                      "greedy_agreement": run["greedy_agreement"], "greedy_agreement_vllm": run["greedy_agreement_vllm"],
                      "ratio_overlap_on_vs_off": run["ratio_tokens_per_s_overlap_on_vs_off"],
                      "ttft_ms": run["grserve"]["ttft"], "tpot_ms": run["grserve"]["tpot"]}, indent=2))


def cmd_router(args) -> None:
    import uvicorn

    from grserve.service.router import create_router_app
    tokenizer = None
    if args.tokenizer:
        from grserve.model.tokenizer import load_tokenizer
        tokenizer = load_tokenizer(args.tokenizer)
    uvicorn.run(create_router_app(args.etcd, args.policy, args.retries, tokenizer=tokenizer), host=args.host,
                port=args.port, log_level="info")


def cmd_bench_scaling(args) -> None:
    from grserve.bench.gr_bench import save
    from grserve.bench.scaling import run_scaling
    run = run_scaling(tuple(int(n) for n in args.instances.split(",")))
    path = save(run, args.out)
    print(json.dumps({"json": str(path), "runs": [{"instances": r["instances"], "peak": r["peak"]["throughput"],
                                                    "qps_at_slo": r["qps_at_slo"]} for r in run["runs"]]}, indent=2))


def cmd_bench_colocation(args) -> None:
    from grserve.bench.colocation import run_colocation
    from grserve.bench.gr_bench import save
    run = run_colocation(online_rate=args.online_rate, duration_s=args.duration)
    path = save(run, args.out)
    print(json.dumps({"json": str(path), "online_p99_alone_ms": run["online_alone"]["p99_ms"],
                      "online_p99_with_offline_ms": run["online_with_offline"]["p99_ms"],
                      "p99_ratio": run["p99_ratio"], "offline_per_s": run["offline_per_s"]}, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="grserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_model(p):
        p.add_argument("--model", help="GR model directory (default: the embedded MovieLens-100K model)")
        p.add_argument("--device", default="cpu")
        return p

    p = sub.add_parser("serve", help="serve a GR model over HTTP")
    p.add_argument("--config", help="TOML or YAML file of settings; flags override it")
    from grserve.server.config import ServerConfig
    for f in ServerConfig.settings().values():
        flag = "--" + f.name.replace("_", "-")
        if f.type.startswith("bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"default: {f.default}")
        else:
            # annotations are strings here (`from __future__ import annotations`): "float | None" is a float flag
            kind = {"int": int, "float": float}.get(f.type.replace(" | None", ""), str)
            p.add_argument(flag, type=kind, default=None, help=f"default: {f.default}")
    p.set_defaults(func=cmd_serve)

    p = with_model(sub.add_parser("recommend", help="top-N items for one history"))
    p.add_argument("--history", default="", help="comma-separated item ids, oldest first")
    p.add_argument("--top-n", type=int, default=10)
    p.add_argument("--beam-width", type=int, default=64)
    p.add_argument("--keep-history", action="store_true", help="allow items of the history in the answer")
    p.add_argument("--exclude", help="comma-separated item ids never to return")
    p.add_argument("--allow", help="comma-separated item ids: return only these")
    p.add_argument("--reference", action="store_true", help="run the slow reference beam search instead")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("train", help="build SIDs and train a GR model on a dataset")
    p.add_argument("--dataset", default="ml-100k", help="'ml-100k', a RecBole atomic directory or a sequence file")
    p.add_argument("--item-meta", help="JSON of item descriptions for a sequence file")
    p.add_argument("--out", required=True)
    from grserve.data.training import TrainConfig
    for f in fields(TrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None)
    p.set_defaults(func=cmd_train)

    p = with_model(sub.add_parser("eval", help="Recall/NDCG@5,10 on the leave-one-out split vs popularity"))
    p.add_argument("--dataset", help="default: the dataset the model was trained on")
    p.add_argument("--item-meta")
    p.add_argument("--split", choices=("test", "valid"), default="test")
    p.add_argument("--beam-width", type=int, default=50)
    p.add_argument("--users", type=int, default=0, help="evaluate only the first N users (0 = all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("synth", help="write a random-weight GR model and a random catalog (HF format)")
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("router", help="route the public API over the instances registered in etcd")
    p.add_argument("--etcd", required=True, help="etcd URL, e.g. http://127.0.0.1:2379")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--policy", choices=("round-robin", "least-loaded", "cache-aware"), default="least-loaded")
    p.add_argument("--retries", type=int, default=2, help="other instances tried after a failure")
    p.add_argument("--tokenizer", help="the served LLM's model directory: cache-aware routing of text prompts")
    p.set_defaults(func=cmd_router)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    p = with_model(bench.add_parser("attention", help="staged vs expanded attention; engine vs reference"))
    p.add_argument("--prompt-len", type=int, default=1024)
    p.add_argument("--beam-width", type=int, default=256)
    p.add_argument("--engine-beam-width", type=int, default=128)
    p.add_argument("--requests", type=int, default=4)
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(func=cmd_bench_attention)

    p = bench.add_parser("gr", help="grserve vs HF transformers vs vLLM: throughput, P99 at an SLO, ablations, MFU")
    p.add_argument("--quick", action="store_true", help="workload (a) only, under a minute, one JSON line")
    p.add_argument("--slo-ms", type=float, default=200.0)
    p.add_argument("--vllm-python", help="python of the vLLM venv (make bench-env: .venv-bench/bin/python)")
    p.add_argument("--workloads", default="ab", help="a: MovieLens-100K; b: synthetic 1M items (default: ab)")
    p.add_argument("--repeats", type=int, default=3, help="peaks per system, taking turns; the median is reported")
    p.add_argument("--out", default="benchmarks/results")
    p.set_defaults(func=cmd_bench_gr)

    p = bench.add_parser("llm", help="LLM engine vs transformers: output tokens/s, TTFT, TPOT")
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="runs per system, taking turns; the median is reported")
    p.add_argument("--vllm-python", help="python of the vLLM venv (make bench-env: .venv-bench/bin/python)")
    p.add_argument("--out", default="benchmarks/results")
    p.set_defaults(func=cmd_bench_llm)

    p = bench.add_parser("scaling", help="the GR workload through the router over 1, 2, 3 instances (real etcd)")
    p.add_argument("--instances", default="1,2,3")
    p.add_argument("--out", default="benchmarks/results")
    p.set_defaults(func=cmd_bench_scaling)

    p = bench.add_parser("colocation", help="online P99 alone and beside a saturating offline load")
    p.add_argument("--online-rate", type=float, default=20.0)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--out", default="benchmarks/results")
    p.set_defaults(func=cmd_bench_colocation)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"grserve {args.command}: error: {e}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
