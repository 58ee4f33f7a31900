"""An LLM request's state as the continuous scheduler sees it: its tokens, how many have KV, its
blocks, its status."""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from enum import Enum

from grserve.sampling.params import SamplingParams

_ids = itertools.count()

ONLINE, OFFLINE = 0, 1  # priority classes: online requests are always scheduled first
PRIORITY = {"online": ONLINE, "offline": OFFLINE}  # by the name requests give


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: int = ONLINE
    seq_id: int = field(default_factory=lambda: next(_ids))
    arrival: float = field(default_factory=time.perf_counter)
    token_ids: list[int] = field(init=False)
    num_computed_tokens: int = 0  # tokens whose KV is in the cache
    num_cached_tokens: int = 0  # of those, how many the prefix cache supplied
    block_table: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    finish_reason: str | None = None
    cancelled: bool = False
    output_logprobs: list = field(default_factory=list)
    draft: list[int] = field(default_factory=list)  # speculative tokens this step verifies (not in token_ids)
    num_pending: int = 0  # tokens a scheduled step will sample, not yet in token_ids (with overlap: in flight)

    def __post_init__(self) -> None:
        self.token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def in_prefill(self) -> bool:
        return self.num_computed_tokens < self.num_prompt_tokens

    def order(self) -> tuple[int, float, int]:
        return (self.priority, self.arrival, self.seq_id)
