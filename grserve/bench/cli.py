"""`grserve bench …`: the benchmark subcommands' flags and what each runs. Every run writes its JSON under
`--out` (benchmarks/results by default)."""
from __future__ import annotations

import json
from pathlib import Path


def cmd_attention(args) -> None:
    from grserve.bench.attention import run_attention_bench
    from grserve.bench.engine_vs_reference import run_engine_bench
    from grserve.bench.machine import machine_info
    from grserve.bundle import GRBundle
    result = {"machine": machine_info(), "attention": run_attention_bench(prompt_len=args.prompt_len, beam_width=args.beam_width),
              "engine_vs_reference": run_engine_bench(GRBundle.load(args.model, device=args.device),
                                                      beam_width=args.engine_beam_width, requests=args.requests)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


def _given(args) -> dict:
    """The measurement flags given on the command line (the rest keep BenchOptions' defaults)."""
    names = ("repeats", "duration_s", "min_requests", "peak_requests", "baseline_requests", "agreement_requests",
             "fractions", "flops_seconds", "hf_batch")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _sweep_flags(p) -> None:
    p.add_argument("--slo-ms", type=float, default=200.0, help="the P99 latency SLO in milliseconds")
    p.add_argument("--beam-width", type=int, default=128, help="beam width of the MovieLens workload (a)")
    p.add_argument("--repeats", type=int, help="peaks per system and runs per swept rate, taking turns (default 3)")
    p.add_argument("--duration", dest="duration_s", type=float,
                   help="seconds of arrivals per swept run (default 6; bench gr --quick 2)")
    p.add_argument("--min-requests", type=int, help="requests per swept run at least (low rates run longer; "
                   "default 30; bench gr --quick 12)")
    p.add_argument("--rates", dest="fractions", type=_fractions,
                   help="comma-separated offered rates to sweep, as fractions of each system's peak "
                        "(default 0.1,0.2,0.3,0.5,0.7,0.8,0.9,1)")
    p.add_argument("--peak-requests", type=int, help="requests of grserve's peak and warm-up (default 64)")


def cmd_gr(args) -> None:
    from grserve.bench.gr_bench import BenchOptions, run_bench, save
    from grserve.bench.report import write_report
    # --quick: workload (a), grserve and HF only, shorter swept runs (a few minutes)
    quick = {"duration_s": 2.0, "min_requests": 12, "agreement_requests": 8, "baseline_requests": 8} \
        if args.quick else {}
    opts = BenchOptions(slo_ms=args.slo_ms, quick=args.quick, vllm_python=args.vllm_python, out_dir=args.out,
                        workloads=args.workloads, beam_width=args.beam_width, **(quick | _given(args)))
    run = run_bench(opts)
    path = save(run, opts.out_dir, "-quick" if args.quick else "")
    files = write_report(path)
    if args.quick:
        print(json.dumps(run["headline"]))
    else:
        print(json.dumps({"json": str(path), "files": [str(f) for f in files], **run["headline"]}, indent=2))


def cmd_llm(args) -> None:
    from grserve.bench.gr_bench import save
    from grserve.bench.llm_bench import run_llm_bench
    run = run_llm_bench(requests=args.requests, prompt_len=args.prompt_len, max_tokens=args.max_tokens,
                        layers=args.layers, hidden=args.hidden, vllm_python=args.vllm_python, repeats=args.repeats,
                        dtype=args.dtype)
    path = save(run, args.out)
    print(json.dumps({"json": str(path), "grserve_tokens_per_s": run["grserve"]["output_tokens_per_s"],
                      "hf_tokens_per_s": run["hf"]["output_tokens_per_s"],
                      "vllm_tokens_per_s": run["vllm"]["output_tokens_per_s"] if run["vllm"] else None,
                      "ratio_vs_hf": run["ratio_tokens_per_s_vs_hf"], "ratio_vs_vllm": run["ratio_tokens_per_s_vs_vllm"],
                      "greedy_agreement": run["greedy_agreement"], "greedy_agreement_vllm": run["greedy_agreement_vllm"],
                      "ratio_overlap_on_vs_off": run["ratio_tokens_per_s_overlap_on_vs_off"],
                      "ratio_compile_on_vs_off": run["ratio_tokens_per_s_compile_on_vs_off"],
                      "ratio_packed_linears_on_vs_off": run["ratio_tokens_per_s_packed_linears_on_vs_off"],
                      "ratio_int8_vs_grserve": run["ratio_tokens_per_s_int8_vs_grserve"],
                      "int8_prefix_agreement": run["int8_prefix_agreement"],
                      "ttft_ms": run["grserve"]["ttft"], "tpot_ms": run["grserve"]["tpot"]}, indent=2))


def cmd_llm_kernels(args) -> None:
    from grserve.bench.gr_bench import save
    from grserve.bench.llm_kernels import run_llm_kernel_bench
    from grserve.bench.machine import machine_info
    run = {"kind": "llm-kernels", "machine": machine_info(),
           **run_llm_kernel_bench(layers=args.layers, hidden=args.hidden, repeats=args.repeats, dtype=args.dtype)}
    print(json.dumps({"json": str(save(run, args.out)), **run}, indent=1))


def cmd_scaling(args) -> None:
    from grserve.bench.gr_bench import BenchOptions, save
    from grserve.bench.scaling import run_scaling
    opts = BenchOptions(slo_ms=args.slo_ms, beam_width=args.beam_width, **_given(args))
    run = run_scaling(tuple(int(n) for n in args.instances.split(",")), opts, args.failover, args.failover_seconds)
    path = save(run, args.out)
    failover = {k: v for k, v in run.get("failover", {}).items() if k in ("rate", "by_status", "lost", "fraction_200",
                                                                            "p99_ms_200")}
    print(json.dumps({"json": str(path), "runs": [{"instances": r["instances"], "peak": r["peak"]["throughput"],
                                                    "qps_at_slo": r["qps_at_slo"]} for r in run["runs"]],
                      **({"failover": failover} if failover else {})}, indent=2))


def cmd_colocation(args) -> None:
    from grserve.bench.colocation import run_colocation
    from grserve.bench.gr_bench import save
    run = run_colocation(online_rate=args.online_rate, duration_s=args.duration, backlog=args.backlog)
    path = save(run, args.out)
    print(json.dumps({"json": str(path), "online_p99_alone_ms": run["online_alone"]["p99_ms"],
                      "online_p99_with_offline_ms": run["online_with_offline"]["p99_ms"],
                      "p99_ratio": run["p99_ratio"], "offline_per_s": run["offline_per_s"]}, indent=2))


def cmd_overload(args) -> None:
    from grserve.bench.gr_bench import save
    from grserve.bench.overload import OverloadOptions, headline, run_overload
    from grserve.bench.overload_plot import plot_overload
    # --quick: 1 s levels, two swept rates run once, a 3 s soak: seconds, and it measures nothing
    quick = {"level_s": 1.0, "sweep_s": 1.0, "repeats": 1, "min_requests": 4, "fractions": (0.5, 1.0),
             "peak_requests": 4, "rss_every_s": 0.5} if args.quick else {}
    given = {k: v for k, v in vars(args).items() if k in OverloadOptions.__dataclass_fields__ and v is not None}
    soak = {"soak_s": args.soak_seconds or (3.0 if args.quick else 600.0)} if args.soak or args.soak_seconds else {}
    opts = OverloadOptions(**(quick | given | soak))
    run = run_overload(opts)
    path = save(run, opts.out_dir)
    plot_overload(run, path.with_suffix(".png"))
    print(json.dumps({"json": str(path), "png": str(path.with_suffix(".png")), **headline(run)}, indent=2))


def cmd_catalog(args) -> None:
    from grserve.bench.catalog_bench import CatalogBenchOptions, run_catalog_bench
    from grserve.bench.gr_bench import save
    # a quarter of the peak and a minute's deadlines: a smoke run checks versions, not speed, and must not fail
    # requests because the machine got busier after the peak was measured
    quick = {"items": 20_000, "changes": 500, "gap_s": 1.0, "peak_requests": 8, "load_share": 0.25,
             "timeout_ms": 60_000} if args.quick else {}
    given = {k: v for k, v in vars(args).items() if k in CatalogBenchOptions.__dataclass_fields__ and v is not None}
    opts = CatalogBenchOptions(**(quick | given))
    run = run_catalog_bench(opts)
    path = save(run, opts.out_dir, "-quick" if args.quick else "")
    print(json.dumps({"json": str(path), **{mode: [{"failed": r["failed"], "changes": r["changes"]} for r in rs]
                                            for mode, rs in run["modes"].items()}}, indent=2))


def _add_catalog_parser(bench) -> None:
    p = bench.add_parser("catalog", help="live catalog changes under steady load on the synthetic 1M-item "
                                         "catalog: 10,000 items disabled, then 10,000 added")
    p.add_argument("--quick", action="store_true", help="20,000 items, 500 changes, 1 s gaps: a smoke run")
    p.add_argument("--items", type=int, help="items of the synthetic catalog (default 1,000,000)")
    p.add_argument("--changes", type=int, help="items disabled, then items added (default 10,000)")
    p.add_argument("--load-share", type=float, help="the steady load as a share of the measured peak (default 0.5)")
    p.add_argument("--gap-seconds", dest="gap_s", type=float,
                   help="seconds of steady load before, between and after the changes (default 5)")
    p.add_argument("--repeats", type=int, help="rounds of every catalog mode (default 1)")
    p.add_argument("--out", dest="out_dir", default="benchmarks/results", help="directory of the result files")
    p.set_defaults(func=cmd_catalog)


def _fractions(text: str) -> tuple[float, ...]:
    values = tuple(float(x) for x in text.split(","))
    if not values or not all(0 < v <= 2 for v in values):
        raise ValueError(f"--rates: fractions of the peak in (0, 2], got {text!r}")
    return tuple(sorted(values))


def _multiples(text: str) -> tuple[float, ...]:
    values = tuple(float(x) for x in text.split(","))
    if not values or not all(v > 0 for v in values):
        raise ValueError(f"--levels: positive multiples of the capacity, got {text!r}")
    return values


def _dtype_flag(p, what: str) -> None:
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help=f"{what} (default: %(default)s; bfloat16 is slow where the CPU lacks native bf16)")


def _add_llm_parsers(bench) -> None:
    """`bench llm` and `bench llm-kernels`."""
    p = bench.add_parser("llm", help="LLM engine vs transformers: output tokens/s, TTFT, TPOT")
    p.add_argument("--requests", type=int, default=16, help="prompts per batch")
    p.add_argument("--prompt-len", type=int, default=256, help="tokens per prompt")
    p.add_argument("--max-tokens", type=int, default=64, help="greedy output tokens per prompt")
    p.add_argument("--layers", type=int, default=8, help="layers of the synthetic Llama")
    p.add_argument("--hidden", type=int, default=512, help="hidden size of the synthetic Llama")
    p.add_argument("--repeats", type=int, default=3, help="runs per system, taking turns; the median is reported")
    p.add_argument("--vllm-python", help="python of the vLLM venv (make bench-env: .venv-bench/bin/python)")
    _dtype_flag(p, "what every system computes in")
    p.add_argument("--out", default="benchmarks/results", help="directory of the result files")
    p.set_defaults(func=cmd_llm)

    p = bench.add_parser("llm-kernels", help="the LLM decode step's CPU kernels against what they replaced")
    p.add_argument("--layers", type=int, default=8, help="layers of the synthetic Llama's shapes")
    p.add_argument("--hidden", type=int, default=512, help="its hidden size")
    p.add_argument("--repeats", type=int, default=20, help="timed calls of each; the median is reported")
    _dtype_flag(p, "what the kernels compute in")
    p.add_argument("--out", default="benchmarks/results", help="directory of the result files")
    p.set_defaults(func=cmd_llm_kernels)


def _add_overload_parser(bench) -> None:
    p = bench.add_parser("overload", help="goodput from 0.5x to 4x of the capacity at the SLO, admission control "
                                          "on and off; --soak: memory and goodput over 10 minutes at 1.2x")
    p.add_argument("--quick", action="store_true",
                   help="1 s levels, two swept rates run once, a peak of 4: a smoke run")
    p.add_argument("--slo-ms", type=float, help="the SLO and every request's timeout_ms (default 200)")
    p.add_argument("--beam-width", type=int, help="beam width of the MovieLens requests (default 128)")
    p.add_argument("--levels", type=_multiples, help="comma-separated offered loads as multiples of the capacity "
                   "(default 0.5,1,1.5,2,3,4)")
    p.add_argument("--level-seconds", dest="level_s", type=float,
                   help="seconds of arrivals per level and variant (default 30)")
    p.add_argument("--rates", dest="fractions", type=_fractions, help="comma-separated rates of the capacity "
                   "sweep, as fractions of the peak (default 0.2,0.4,0.5,0.6,0.7,0.8,0.9,1)")
    p.add_argument("--repeats", type=int, help="runs per swept rate (default 3)")
    p.add_argument("--sweep-seconds", dest="sweep_s", type=float, help="seconds of arrivals per swept run "
                   "(default 6; low rates run until 30 requests arrive)")
    p.add_argument("--peak-requests", type=int, help="requests of the peak and of each start's warm-up (default 64)")
    p.add_argument("--soak", action="store_true", help="then a soak at 1.2x the capacity, admission on: the "
                   "server's resident memory and goodput per minute")
    p.add_argument("--soak-seconds", type=float, help="the soak's length (default 600; --quick 3)")
    p.add_argument("--soak-level", type=float, help="the soak's offered load, a multiple of the capacity (default 1.2)")
    p.add_argument("--threads", type=int, help="the server's --threads (default: unset, it sizes them to its CPUs)")
    p.add_argument("--target-step-ms", type=float, help="the server's --target-step-ms (default: unset, its own)")
    p.add_argument("--out", dest="out_dir", default="benchmarks/results", help="directory of the result files")
    p.set_defaults(func=cmd_overload)


def add_bench_parser(sub, with_model) -> None:
    """The `bench` subcommand and its own subcommands, under the main parser's `sub`."""
    bench = sub.add_parser("bench", help="benchmarks (results under benchmarks/results)").add_subparsers(
        dest="bench", required=True)
    p = with_model(bench.add_parser("attention", help="staged vs expanded attention; engine vs reference"))
    p.add_argument("--prompt-len", type=int, default=1024, help="prompt tokens of the attention microbenchmark")
    p.add_argument("--beam-width", type=int, default=256, help="beam rows of the attention microbenchmark")
    p.add_argument("--engine-beam-width", type=int, default=128, help="beam width of engine vs reference")
    p.add_argument("--requests", type=int, default=4, help="requests of engine vs reference")
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(func=cmd_attention)

    p = bench.add_parser("gr", help="grserve vs HF transformers vs vLLM: throughput, P99 at an SLO, ablations, MFU")
    p.add_argument("--quick", action="store_true",
                   help="workload (a), grserve and HF only, 2 s swept runs: a few minutes; prints one JSON line")
    p.add_argument("--vllm-python", help="python of the vLLM venv (make bench-env: .venv-bench/bin/python)")
    p.add_argument("--workloads", default="ab", help="a: MovieLens-100K; b: synthetic 1M items (default: ab)")
    _sweep_flags(p)
    p.add_argument("--flops-seconds", type=float, help="time cap of each peak FLOP/s measurement (default 10)")
    p.add_argument("--baseline-requests", type=int, help="requests of HF's and vLLM's peak (default 32; "
                   "--quick 8)")
    p.add_argument("--hf-batch", type=int, help="prompts per HF generate (default 1, which serves it best here)")
    p.add_argument("--agreement-requests", type=int,
                   help="prompts every system answers for the agreement (default 32, --quick 8)")
    p.add_argument("--out", default="benchmarks/results", help="directory of the result files")
    p.set_defaults(func=cmd_gr)

    _add_llm_parsers(bench)

    p = bench.add_parser("scaling", help="the GR workload through the router over 1, 2, 3 instances (real etcd)")
    p.add_argument("--instances", default="1,2,3", help="comma-separated instance counts")
    p.add_argument("--failover", action="store_true", help="then, over the most instances: half their measured "
                   "peak, 1 s deadlines, one instance SIGKILLed 2 s in; answers by status, lost, P99")
    p.add_argument("--failover-seconds", type=float, default=20.0, help="seconds of arrivals of the failover run "
                   "(default: %(default)s)")
    _sweep_flags(p)
    p.add_argument("--out", default="benchmarks/results", help="directory of the result files")
    p.set_defaults(func=cmd_scaling)

    p = bench.add_parser("colocation", help="online P99 alone and beside a saturating offline load")
    p.add_argument("--online-rate", type=float, default=20.0, help="online requests per second")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of online arrivals per phase")
    p.add_argument("--backlog", type=int, default=64, help="offline requests kept queued beside the online ones")
    p.add_argument("--out", default="benchmarks/results", help="directory of the result files")
    p.set_defaults(func=cmd_colocation)
    _add_overload_parser(bench)
    _add_catalog_parser(bench)
