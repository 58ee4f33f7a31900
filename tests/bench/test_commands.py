"""Every `grserve bench` subcommand, run through the CLI at a tiny size (seconds each), so that an import
error, a hang or a broken report cannot land. Each checks the result file it wrote, not the speed."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from grserve.cli import main

SWEEP = ["--duration", "0.3", "--min-requests", "4", "--rates", "0.5,1", "--peak-requests", "8"]


def _written(directory: Path, pattern: str) -> dict:
    [path] = directory.glob(pattern)
    return json.loads(path.read_text())


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return set()


def _check_slo_rule(system: dict, slo_ms: float) -> None:
    """Max QPS at the SLO, recomputed from the raw runs: the highest rate with it and every lower one passing."""
    expected = 0.0
    for point in sorted(system["sweep"], key=lambda p: p["offered_rate"]):
        runs = point["runs"]
        p99 = statistics.median(float("inf") if r["p99_ms"] is None else r["p99_ms"] for r in runs)
        if not (all(r["ok"] == r["requests"] for r in runs) and p99 <= slo_ms):
            break
        expected = point["offered_rate"]
    assert system["qps_at_slo"] == expected


def test_bench_gr_quick(tmp_path, capsys):
    main(["bench", "gr", "--quick", "--beam-width", "16", *SWEEP, "--baseline-requests", "4",
          "--agreement-requests", "4", "--flops-seconds", "1", "--out", str(tmp_path)])
    run = _written(tmp_path, "gr-*-quick.json")
    assert (tmp_path / next(tmp_path.glob("gr-*-quick.json")).name.replace(".json", ".md")).exists()
    assert run["machine"]["cpu"] and run["machine"]["threads"] >= 1
    has_bf16 = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})
    assert (run["peak_flops"]["bf16"] is not None) == has_bf16  # bf16 measured only where it is native
    [workload] = run["workloads"]
    systems = workload["systems"]
    assert set(systems) == {"grserve", "grserve +compile", "hf"}
    for name, system in systems.items():
        assert len(system["peaks"]) == 3  # three turns each
        assert system["agreement_requests"] == 4
        if system["sweep"]:
            assert all(len(p["runs"]) == 3 for p in system["sweep"])
        _check_slo_rule(system, 200.0)
    assert systems["hf"]["peak_requests"] == 4 and systems["grserve"]["peak_requests"] == 8
    assert systems["hf"]["agreement"] == 1.0  # the same constrained beam search
    assert systems["grserve +compile"]["agreement"] == 1.0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["throughput"]["grserve"] > 0


def test_bench_attention(tmp_path, tiny_model_dir):
    out = tmp_path / "attention.json"
    main(["bench", "attention", "--model", tiny_model_dir, "--prompt-len", "16", "--beam-width", "8",
          "--engine-beam-width", "10", "--requests", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    attention = result["attention"]
    assert attention["max_abs_diff"] < 1e-4  # staged and expanded attention agree
    assert attention["speedup_kernels"] == pytest.approx(attention["expanded_sdpa_ms"] / attention["staged_ms"])
    assert result["engine_vs_reference"]["same_items"]
    assert result["machine"]["cpu"] and isinstance(result["machine"]["isa"], list)


def test_bench_llm(tmp_path, monkeypatch):
    monkeypatch.setenv("GRSERVE_CACHE", str(tmp_path / "cache"))  # the synthetic model goes there
    main(["bench", "llm", "--requests", "2", "--prompt-len", "16", "--max-tokens", "4", "--layers", "1",
          "--hidden", "64", "--repeats", "1", "--out", str(tmp_path)])
    run = _written(tmp_path, "llm-*.json")
    assert run["greedy_agreement"] == 1.0 and run["overlap_agreement"] == 1.0  # transformers' tokens
    assert run["packed_linears_agreement"] == 1.0
    assert run["machine"]["cpu"] and run["vllm"] is None


def test_bench_llm_kernels(tmp_path):
    main(["bench", "llm-kernels", "--layers", "1", "--hidden", "64", "--repeats", "1", "--out", str(tmp_path)])
    run = _written(tmp_path, "llm-kernels-*.json")
    # Both layouts compute the same products (bit for bit from 16 rows on); both attentions the same outputs.
    assert [r["rows"] for r in run["linear_layout"]] == [1, 16, 64, 1024]
    assert all(r["bitwise_equal"] for r in run["linear_layout"] if r["rows"] >= 16)
    assert all(r["packed_max_rel_diff"] < 1e-5 for r in run["linear_layout"])
    assert run["decode_attention"]["max_abs_diff"] < 1e-5 and run["machine"]["cpu"]


def test_bench_colocation(tmp_path):
    main(["bench", "colocation", "--online-rate", "5", "--duration", "0.5", "--backlog", "2", "--out", str(tmp_path)])
    run = _written(tmp_path, "colocation-*.json")
    assert run["online_alone"]["ok"] == run["online_alone"]["requests"] > 0
    assert run["online_with_offline"]["ok"] == run["online_with_offline"]["requests"] > 0
    assert run["offline_completed"] > 0


def test_bench_scaling(tmp_path):
    main(["bench", "scaling", "--instances", "1", "--beam-width", "16", *SWEEP, "--repeats", "1",
          "--out", str(tmp_path)])
    run = _written(tmp_path, "scaling-*.json")
    [one] = run["runs"]
    assert one["instances"] == 1 and one["peak"]["ok"] == one["peak"]["requests"] == 8
    assert one["agreement_requests"] == run["options"]["agreement_requests"]
    _check_slo_rule(one, run["slo_ms"])


def test_bench_scaling_failover(tmp_path):
    main(["bench", "scaling", "--instances", "2", "--failover", "--failover-seconds", "3", "--beam-width", "16",
          *SWEEP, "--repeats", "1", "--out", str(tmp_path)])
    run = _written(tmp_path, "scaling-*.json")
    [two], failover = run["runs"], run["failover"]
    assert failover["instances"] == 2 and failover["victim_exit"] == -9  # SIGKILLed
    assert failover["rate"] == pytest.approx(max(two["peak"]["throughput"] / 2, 0.5))
    # every request is counted once: answered with some status, or lost
    assert sum(failover["by_status"].values()) + failover["lost"] == failover["requests"] > 0
    assert failover["fraction_200"] == failover["by_status"].get("200", 0) / failover["requests"]


def test_bench_overload_quick(tmp_path):
    main(["bench", "overload", "--quick", "--beam-width", "16", "--rates", "1", "--levels", "0.5,2", "--soak",
          "--soak-seconds", "1", "--out", str(tmp_path)])
    run = _written(tmp_path, "overload-*.json")
    assert run["machine"]["cpu"] and next(tmp_path.glob("overload-*.png")).stat().st_size > 0
    slo, sweep = run["options"]["slo_ms"], run["capacity"]["sweep"]
    # the capacity, recomputed from the raw runs: the highest rate with it and every lower one passing, where
    # a rate passes with ≥ 99% of its requests answered 200 within the deadline and its 200s' P99 within the SLO
    passed = [statistics.median(r["within_slo"] / r["requests"] for r in p["runs"]) >= 0.99 and statistics.median(
        float("inf") if r["p99_ms"] is None else r["p99_ms"] for r in p["runs"]) <= slo for p in sweep]
    assert passed[:-1] == [True] * (len(sweep) - 1)  # the sweep stops at its first failing rate
    capacity = sweep[-1]["offered_rate"] if passed[-1] else (sweep[-2]["offered_rate"] if len(sweep) > 1 else 0.0)
    assert run["capacity"]["qps_at_slo"] == capacity
    assert run["reference_rate"] == (capacity or sweep[0]["offered_rate"])
    assert [r["order"] for r in run["levels"]] == [["admission on", "admission off"], ["admission off", "admission on"]]
    for row in run["levels"]:
        assert row["offered_rate"] == row["level"] * run["reference_rate"]
        on, off = row["variants"]["admission on"], row["variants"]["admission off"]
        assert on["requests"] == off["requests"] > 0  # the same arrivals for both variants
        for v in (on, off):
            assert sum(v["counts"].values()) == sum(v["statuses"].values()) == v["requests"]
            assert v["share_504"] == v["counts"]["504"] / v["requests"]
    soak = run["soak"]
    assert soak["rss_kib"] and all(kib > 0 for _, kib in soak["rss_kib"]) and len(soak["goodput_per_minute"]) == 1


def test_bench_catalog_quick(tmp_path):
    """Under a steady load through a real server, with the catalog in its own process and in the serving
    process: nothing fails, no answer sent after a change's acknowledgement uses an older version or returns a
    disabled item, and the catalog ends with both changes."""
    main(["bench", "catalog", "--quick", "--items", "5000", "--changes", "200", "--gap-seconds", "2", "--out",
          str(tmp_path)])
    run = _written(tmp_path, "catalog-*.json")
    assert run["machine"]["cpu"] and set(run["modes"]) == {"process", "in-process"}
    for (one,) in run["modes"].values():
        assert one["failed"] == 0, one["failed_by_status"]
        assert one["catalog_after"] == {"version": 2, "items": 5000 + 200, "disabled": 200}
        disable, add = one["changes"]["disable"], one["changes"]["add"]
        assert (disable["version"], add["version"]) == (1, 2)
        assert disable["older_version_after_ack"] == add["older_version_after_ack"] == 0
        assert disable["answers_after_ack"] > 0 and disable["disabled_items_returned"] == 0
        assert disable["ack_ms"] > 0 and add["ack_ms"] > 0
        # the steps of the answers in flight (a slow machine's low rate may leave none in a short change)
        assert add["steps"]["steps"] > 0 and add["steps"]["max_step_ms"] > 0 or add["in_flight"]["requests"] == 0
        assert one["steady_steps"]["steps"] > 0 or one["steady"]["requests"] == 0


def test_step_delays_against_a_hand_worked_fit():
    from grserve.bench.catalog_bench import step_delays, step_fit
    fit = step_fit([(10.0, 1), (20.0, 2), (30.0, 3)])  # 10 ms a request, nothing fixed
    assert fit.tolist() == pytest.approx([10.0, 0.0], abs=1e-9)
    # 45 ms for 2 requests is 2.25x the expected 20 (delayed by more than a step); 39 ms for 2 and 55 for 3 are not
    assert step_delays([(45.0, 2), (39.0, 2), (55.0, 3)], fit) == {
        "steps": 3, "max_step_ms": 55.0, "max_ratio": 2.25, "delayed_over_one_step": 1}
    assert step_fit([(12.0, 4), (14.0, 4)]).tolist() == [0.0, 13.0]  # one batch size: its median, flat
    # no steady steps, no yardstick: the steps are counted, their delay is unknown
    assert step_fit([]) is None
    assert step_delays([(45.0, 2)], None) == {"steps": 1, "max_step_ms": 45.0, "max_ratio": None,
                                              "delayed_over_one_step": None}
