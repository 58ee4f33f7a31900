"""A core the engine's steps leave to other CPU work of the server (a catalog change being built).

Sharing a core with busy work, a torch thread team waits at every barrier for the member the OS took the core
from: steps measured 10x slower here, against ~1.7x on one thread fewer. The step thread reads the loan when
a step starts, so a step already running on every thread would still meet the work: `set` therefore waits
until no such step runs (at most one step) before the work starts."""
from __future__ import annotations

import threading


class CoreLoan:
    """`set` while the other work runs (it returns once no step holds every thread), `clear` when it is done;
    the step thread brackets each step with `step_threads` and `step_done`."""

    def __init__(self, wait_s: float = 1.0):
        self._wanted = threading.Event()
        self._full_step = False  # a step runs a thread team on every thread
        self._cond = threading.Condition()
        self.wait_s = wait_s  # a step longer than this is not waited for (an engine stuck on one, say)

    def set(self) -> None:
        self._wanted.set()
        with self._cond:
            self._cond.wait_for(lambda: not self._full_step, timeout=self.wait_s)

    def clear(self) -> None:
        self._wanted.clear()

    def is_set(self) -> bool:
        return self._wanted.is_set()

    def step_threads(self, threads: int) -> int:
        """Threads for the step starting now, of `threads` in all: one fewer while the core is lent."""
        with self._cond:
            lent = self._wanted.is_set()
            self._full_step = not lent and threads > 1  # one thread is no team: nothing to wait for
            return max(1, threads - 1) if lent else threads

    def step_done(self) -> None:
        with self._cond:
            self._full_step = False
            self._cond.notify_all()
