"""The one thread of the process that computes with torch on all its CPU threads, shared by every engine:
each engine's step thread hands it its forwards, samplings and cache writes (`run_compute`), and every other
thread that touches torch (the main thread that loads models and serves HTTP) runs single-threaded.

PyTorch's OpenMP (libgomp) gives every thread that enters a parallel region a thread team of its own, and
once the process holds more OpenMP threads than CPUs, libgomp stops spinning at its barriers and sleeps on a
futex at each one instead. So a second team, even an idle one, slows every GEMM of the team that computes:
on a 2-core AVX2 EPYC, the bench's 16-row decode linears took 13 ms on a step thread while the main thread
had never computed, and 18-23 ms once it had (a single-threaded step took 20); the LLM engine's decode step
went from 29-32 to 23 ms (`benchmarks/results/llm-thread-teams-20261204.json`). One compute thread holds
one team however many engines a server runs (A/B models, GR beside an LLM), and engines that would have
computed at once, sharing the cores, take turns instead. A thread that runs torch on one thread never opens
a team, so an entry point (`grserve serve`, `grserve bench llm`, `grserve bench gr`) keeps one for itself with
`keep_threads_for_compute` before it loads anything."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

_compute_threads: int | None = None  # set by the entry point; None: the process never handed them over
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_thread: threading.Thread | None = None  # the compute thread, once it ran
_default_threads = 1  # its torch threads where no entry point named them: its own default when it started


def keep_threads_for_compute(threads: int) -> None:
    """On the entry point's thread, before its first torch work: the compute thread will run on `threads`
    threads, and this thread from now on on one, so that it never holds a team of its own."""
    global _compute_threads
    _compute_threads = threads
    torch.set_num_threads(1)


@contextmanager
def threads_kept_for_compute():
    """`keep_threads_for_compute` with this thread's torch threads for the block; as before after it."""
    global _compute_threads
    before, mine = _compute_threads, torch.get_num_threads()
    keep_threads_for_compute(before or mine)
    try:
        yield
    finally:
        _compute_threads = before
        torch.set_num_threads(mine)


def compute_threads() -> int | None:
    """The threads kept for computing, or None where no entry point handed them over."""
    return _compute_threads


def _start() -> None:
    global _thread, _default_threads
    _thread, _default_threads = threading.current_thread(), torch.get_num_threads()


def _on_threads(threads: int | None, fn, args):
    # Set for every call: a step may be lent fewer (`CoreLoan`), and another thread's set_num_threads also
    # sets MKL's process-wide count.
    torch.set_num_threads(threads or _compute_threads or _default_threads)
    return fn(*args)


def run_compute(fn, *args, threads: int | None = None):
    """`fn(*args)` on the compute thread, on `threads` torch threads (default: those kept for computing, else
    the compute thread's own default); its result, or its exception raised here. Called on the compute
    thread itself (a nested call), it just runs."""
    global _pool
    if threading.current_thread() is _thread:
        return _on_threads(threads, fn, args)
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="grserve-compute", initializer=_start)
    return _pool.submit(_on_threads, threads, fn, args).result()


def thread_count() -> int:
    """The torch threads a compute call gets by default."""
    return run_compute(torch.get_num_threads)
