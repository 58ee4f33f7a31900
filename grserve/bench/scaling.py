"""`grserve bench scaling`: the same GR workload through the router over 1, 2 and 3 instance processes,
with a real etcd, all on this machine; peak throughput and max QPS at the SLO per instance count. The
machine's cores are split between the instances (`--threads`)."""
from __future__ import annotations

import os
from dataclasses import asdict
import subprocess
import sys
import time

import httpx

from grserve.bench.gr_bench import BenchOptions, measure
from grserve.bench.machine import machine_info
from grserve.bench.systems import HttpSystem
from grserve.bench.workloads import movielens_workload
from grserve.bundle import GRBundle
from grserve.service.etcd_server import EtcdServer, _free_port


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


def run_scaling(counts: tuple[int, ...] = (1, 2, 3), opts: BenchOptions | None = None) -> dict:
    opts = opts or BenchOptions()
    workload = movielens_workload(beam_width=opts.beam_width)
    valid = {tuple(c) for c in GRBundle.load(workload.model_dir).table.codes.tolist()}
    runs = []
    with EtcdServer() as etcd:
        for n in counts:
            ports, router_port = [_free_port() for _ in range(n)], _free_port()
            procs = [subprocess.Popen([sys.executable, "-m", "grserve", "serve", "--port", str(p), "--register", etcd.url,
                                       "--lease-ttl-s", "10", "--heartbeat-s", "0.5", "--max-queue-requests", "100000",
                                       "--default-timeout-ms", "60000", "--target-step-ms", str(opts.slo_ms / 2),
                                       # instances share the machine's cores: split them rather than oversubscribe
                                       "--threads", str(max(1, (os.cpu_count() or 1) // n))],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for p in ports]
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
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(30)
    return {"kind": "scaling", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
            "workload": workload.name, "slo_ms": opts.slo_ms, "options": asdict(opts), "runs": runs}
