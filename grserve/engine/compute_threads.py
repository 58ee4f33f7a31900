"""Which threads of the process get torch's CPU threads: the engines' step threads; every other thread that
computes with torch (the main thread that loads models and serves HTTP) runs single-threaded.

PyTorch's OpenMP (libgomp) gives every thread that enters a parallel region a thread team of its own, and
once the process holds more OpenMP threads than CPUs, libgomp stops spinning at its barriers and sleeps on a
futex at each one instead. So a second team, even an idle one, slows every GEMM of the team that computes:
on a 2-core AVX2 EPYC, the bench's 16-row decode linears took 13 ms on a step thread while the main thread
had never computed, and 18-23 ms once it had (a single-threaded step took 20); the LLM engine's decode step
went from 29-32 to 23 ms (`benchmarks/results/llm-thread-teams-20261204.json`). A thread that runs torch on
one thread never opens a team, so an entry point (`grserve serve`, `grserve bench llm`) hands the threads
to the engines with `keep_threads_for_compute` before it loads anything, and each step thread takes them
with `enter_compute`. Two engines in one process still hold two teams between them."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

_compute_threads: int | None = None  # set by the entry point; None: the process never handed them over


def keep_threads_for_compute(threads: int) -> None:
    """On the entry point's thread, before its first torch work: engine step threads will compute on
    `threads` threads, and this thread from now on on one, so that it never holds a team of its own."""
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


def enter_compute() -> int:
    """First thing on a thread that computes (an engine's step thread): sets its torch threads to those the
    entry point kept for computing (or leaves this thread's default) and returns their number."""
    if _compute_threads is not None:
        torch.set_num_threads(_compute_threads)
    return torch.get_num_threads()


def compute_threads() -> int | None:
    """The threads kept for computing, or None where no entry point handed them over."""
    return _compute_threads


def on_compute_thread(fn, *args):
    """`fn(*args)` on a thread of its own that computes (`enter_compute`), and that thread's team ends with
    it: how a caller whose own thread keeps one torch thread runs torch work at full width."""
    with ThreadPoolExecutor(1, thread_name_prefix="compute") as pool:
        return pool.submit(lambda: (enter_compute(), fn(*args))[1]).result()
