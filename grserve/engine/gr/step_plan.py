"""How the GR scheduler cuts requests into steps, shared by the scheduler (which forms the next step) and by
admission (which plans every step ahead to predict when a new request would finish).

Requests come in scheduling order (priority, then deadline, then arrival). A step takes them while its beam
rows, prompt tokens (padded to the step's longest prompt) and work stay within the budgets, and while they share
the first one's catalog version (a step runs on one version's tables, so a change cuts the step). A step's work
is its beam rows, each request's own (rows are packed per request, never padded to the widest), plus its padded
prompt tokens. Offline work adds at most a share of the step budget on top of the online work, so an online
request arriving meanwhile never waits behind a long offline step."""
from __future__ import annotations

from grserve.engine.gr.config import EngineConfig
from grserve.engine.gr.request import GRRequest
from grserve.engine.gr.step_cost import StepCostModel


def step_work(requests: list[GRRequest]) -> int:
    """Work units of one step: every request's beam rows, and the prompt tokens padded to the longest."""
    return sum(r.beam_width for r in requests) + len(requests) * max((len(r.prompt) for r in requests), default=0)


class StepCut:
    """One step being filled: `fits(r)` says whether the next request in order still fits; `add(r)` takes it."""

    def __init__(self, config: EngineConfig, budget: float):
        self.config, self.budget = config, budget
        self.requests = self.online = self.rows = self.length = 0
        self.online_work = 0
        self.catalog = None  # the first request's catalog version: every request of the step is answered on it

    def work(self, extra: GRRequest | None = None) -> int:
        n, rows, length = self.requests, self.rows, self.length
        if extra is not None:
            n, rows, length = n + 1, rows + extra.beam_width, max(length, len(extra.prompt))
        return rows + n * length

    def fits(self, r: GRRequest) -> bool:
        c = self.config
        if self.requests == 0:
            return True  # a lone request always fits: the budgets bound batching, not a request
        if self.requests >= c.max_batch_requests or self.rows + r.beam_width > c.max_batch_rows:
            return False
        if r.catalog is not self.catalog:
            return False
        if (self.requests + 1) * max(self.length, len(r.prompt)) > c.max_batch_prompt_tokens:
            return False
        limit = self.budget if r.priority == 0 else self.online_work + c.offline_step_fraction * self.budget
        return self.work(r) <= limit

    def add(self, r: GRRequest) -> None:
        if self.requests == 0:
            self.catalog = r.catalog
        self.requests += 1
        self.rows += r.beam_width
        self.length = max(self.length, len(r.prompt))
        if r.priority == 0:
            self.online += 1
            self.online_work = self.work()


def step_budget(cost: StepCostModel, target_s: float, first: GRRequest, now: float) -> float:
    """Work the step starting at `now` with `first` at its head may hold: within the step target, and for online
    work within the head's deadline too (it has the earliest deadline of the step), so that a short deadline
    makes short steps and long ones allow big, efficient steps."""
    seconds = target_s
    if first.priority == 0 and first.deadline is not None:
        seconds = min(seconds, first.deadline - now)
    return cost.budget(seconds)


def plan_finishes(queue: list[GRRequest], start: float, cost: StepCostModel, config: EngineConfig,
                  target_s: float) -> list[float]:
    """When each request of `queue` (in scheduling order) would finish if the steps from `start` on were cut as
    the scheduler cuts them and took the times the cost model predicts."""
    finishes: list[float] = []
    t, i = start, 0
    while i < len(queue):
        cut = StepCut(config, step_budget(cost, target_s, queue[i], t))
        j = i
        while j < len(queue) and cut.fits(queue[j]):
            cut.add(queue[j])
            j += 1
        t += cost.predict(cut.work())
        finishes.extend([t] * (j - i))
        i = j
    return finishes
