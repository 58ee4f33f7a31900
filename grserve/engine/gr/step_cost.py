"""The GR engine's step-cost model: how long a step of a given amount of work takes, fitted online.

A step's time is modelled as fixed + per_unit * work, where a unit of work is a beam row or a prompt token the
step computes (padding included), fitted by least squares over the recent steps. Predictions carry a safety
margin that the model learns from its misses: every admitted request that is answered after its deadline
widens it, and every step whose requests all made their deadlines narrows it slowly again."""
from __future__ import annotations

import math
from collections import deque

import numpy as np


class StepCostModel:
    MIN_MARGIN, MAX_MARGIN = 0.05, 1.0

    def __init__(self, history: int = 64, margin: float = 0.1):
        self.recent: deque[tuple[int, float]] = deque(maxlen=history)  # (work, seconds) of recent steps
        self.margin = margin
        self.fixed = self.per_unit = math.nan
        self.late = 0  # admitted requests answered after their deadline

    @property
    def known(self) -> bool:
        """Whether there is a fit: three steps of distinct work, and a cost that grows with work."""
        return self.per_unit > 0

    def observe(self, work: int, seconds: float) -> None:
        self.recent.append((work, seconds))
        if len({w for w, _ in self.recent}) < 3:
            return
        self.per_unit, fixed = np.polyfit(*zip(*self.recent), 1)
        self.fixed = max(float(fixed), 0.0)

    def observe_deadlines(self, late: int, on_time: int) -> None:
        """After a step: its admitted requests that missed (and made) their deadlines."""
        if late:
            self.late += late
            self.margin = min(self.MAX_MARGIN, self.margin + 0.05 * late)
        elif on_time:
            self.margin = max(self.MIN_MARGIN, self.margin * 0.995)

    def predict(self, work: float) -> float:
        """Seconds a step of `work` takes, margin included (0 until the model is known: nothing is refused on
        a guess)."""
        if not self.known:
            return 0.0
        return (self.fixed + self.per_unit * work) * (1 + self.margin)

    def budget(self, seconds: float) -> float:
        """The most work a step may hold to take at most `seconds` by the fit, margin not included: the margin
        guards promises to requests, not the size of steps (infinite until the model is known). Exact data fit a
        few ulps either side of the exact budget: the relative slack admits a step that exactly fills it, far
        below any real step difference."""
        if not self.known:
            return math.inf
        return max(seconds - self.fixed, 0.0) / self.per_unit * (1 + 1e-9)
