"""`grserve bench scaling`: the same GR workload through the router over 1, 2 and 3 instance processes,
with a real etcd, all on this machine; peak throughput and max QPS at the SLO per instance count. The
machine's CPUs are split between the instances: each is pinned to its own (`cpu_slices`) with as many torch
threads. With `failover`, the largest cluster then serves half its measured peak while one instance is
SIGKILLed (`failover.py`)."""
from __future__ import annotations

from dataclasses import asdict
import subprocess
import tempfile
import sys
import time

import httpx

from grserve.bench.failover import run_failover
from grserve.bench.gr_bench import BenchOptions, measure
from grserve.bench.machine import machine_info
from grserve.bench.systems import HttpSystem
from grserve.bench.workloads import movielens_workload
from grserve.bundle import GRBundle
from grserve.engine.gr.config import step_target_ms
from grserve.server.threads import cpu_slices, pin_to
from grserve.service.etcd_server import EtcdServer, _free_port


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM (a server drains), then SIGKILL if it has not exited within `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _instance(port: int, etcd_url: str, cpus: set[int], opts: BenchOptions, lease_ttl_s: int) -> subprocess.Popen:
    """One `grserve serve` pinned to `cpus` with a torch thread per CPU: instances share the machine's CPUs
    rather than each running a thread on every core (three times oversubscribed with three)."""
    return subprocess.Popen([sys.executable, "-m", "grserve", "serve", "--port", str(port), "--register", etcd_url,
                             "--lease-ttl-s", str(lease_ttl_s), "--heartbeat-s", "0.5",
                             "--max-queue-requests", "100000", "--default-timeout-ms", "60000",
                             "--target-step-ms", str(step_target_ms(opts.slo_ms)), "--threads", str(len(cpus)),
                             # each its own empty catalog state: the shipped catalog, and no shared log
                             "--state-dir", tempfile.mkdtemp(prefix="grserve-bench-state-")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin_to(cpus))


def run_scaling(counts: tuple[int, ...] = (1, 2, 3), opts: BenchOptions | None = None, failover: bool = False,
                failover_s: float = 20.0) -> dict:
    """`failover` needs the largest count to be 2 or more (one instance is killed, another must serve)."""
    opts = opts or BenchOptions()
    if failover and max(counts) < 2:
        raise ValueError("--failover: needs 2 or more instances (one is killed), e.g. --instances 1,2,3")
    workload = movielens_workload(beam_width=opts.beam_width)
    valid = {tuple(c) for c in GRBundle.load(workload.model_dir).table.codes.tolist()}
    runs, failed_over = [], None
    with EtcdServer() as etcd:
        for n in counts:
            ports, router_port = [_free_port() for _ in range(n)], _free_port()
            # a 10 s lease, so a starved heartbeat does not drop an instance mid-run; a killed one leaves routing
            # sooner: suspect after two missed beats, or at its first refused connection
            procs = [_instance(p, etcd.url, cpus, opts, 10) for p, cpus in zip(ports, cpu_slices(n))]
            procs.append(subprocess.Popen([sys.executable, "-m", "grserve", "router", "--etcd", etcd.url, "--port",
                                           str(router_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            url = f"http://127.0.0.1:{router_port}"
            try:
                _wait(lambda: httpx.get(url + "/health").json().get("instances") == n, 120, f"{n} instances")
                system = HttpSystem(f"router over {n}", url, workload.beam_width, workload.top_n, workload.histories)
                system.start()
                system.bind(workload.prompts)
                measured = measure([system], workload, opts, {system.name: opts.peak_requests},
                                   {system.name: opts.peak_requests}, True, valid)
                runs.append({"instances": n, **measured[system.name]})
                if failover and n == max(counts):
                    failed_over = _failover(url, workload, procs[0], n, runs[-1], failover_s)
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(30)
    return {"kind": "scaling", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
            "workload": workload.name, "slo_ms": opts.slo_ms, "options": asdict(opts), "runs": runs,
            **({"failover": failed_over} if failover else {})}


def _failover(url: str, workload, victim: subprocess.Popen, n: int, run: dict, seconds: float) -> dict:
    """Half the cluster's measured peak (its combined capacity: its max QPS at the SLO is often 0 on a small
    machine), 1 s deadlines, one instance SIGKILLed 2 s in."""
    capacity = run["peak"]["throughput"]
    result = run_failover(url, workload.histories, workload.beam_width, workload.top_n, victim,
                          rate=max(capacity / 2, 0.5), duration_s=seconds)
    return {"instances": n, "capacity": capacity, "capacity_is": "peak throughput of this run",
            "qps_at_slo": run["qps_at_slo"], **result}
