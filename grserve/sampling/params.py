"""A request's sampling parameters: one dataclass with vLLM's (and the OpenAI API's) names and defaults,
which checks itself on construction so that the scheduler and sampler never see an impossible request.
Error messages start with the field's API name, so the HTTP layer can return them as they are."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# As in vLLM: a temperature below this counts as 0 (greedy); dividing logits by it would overflow.
SAMPLING_EPS = 1e-5
MAX_LOGPROBS = 20  # OpenAI's cap on top logprobs per token, and vLLM's default max_logprobs
_SEED_MIN, _SEED_MAX = -2**63, 2**64 - 1  # what torch.Generator.manual_seed accepts


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    # NaN and ±inf are rejected: NaN passes no comparison, and inf temperature turns -inf logits into NaN.
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1 or 0: off
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int = 16
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # top logprobs returned per generated token
    use_beam_search: bool = False
    length_penalty: float = 1.0  # beam search: scores are summed log-probs / generated_length ** length_penalty
    best_of: int | None = None  # None: n; the beam width under beam search

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # the OpenAI API takes one stop string or a list
            self.stop = [self.stop]
        self._verify()

    @property
    def greedy(self) -> bool:
        return self.temperature < SAMPLING_EPS or self.top_k == 1

    def _require(self, name: str, ok: bool, requirement: str) -> None:
        if not ok:
            raise ValueError(f"{name} must be {requirement}, got {getattr(self, name)!r}")

    def _verify(self) -> None:
        """Each field alone (vLLM's `_verify_args`), then the cross-field rules; earlier checks guard later
        ones (e.g. `min_tokens` is compared with `max_tokens` only once that is known to be an int)."""
        req = self._require
        req("n", _is_int(self.n) and self.n >= 1, "an int >= 1")
        req("best_of", self.best_of is None or (_is_int(self.best_of) and self.best_of >= self.n),
            f"None or an int >= n ({self.n})")
        req("temperature", _is_real(self.temperature) and self.temperature >= 0, "a number >= 0")
        req("top_p", _is_real(self.top_p) and 0 < self.top_p <= 1, "in (0, 1]")
        req("top_k", _is_int(self.top_k) and self.top_k >= -1, "-1 or 0 (off), or an int >= 1")
        req("min_p", _is_real(self.min_p) and 0 <= self.min_p <= 1, "in [0, 1]")
        req("seed", self.seed is None or (_is_int(self.seed) and _SEED_MIN <= self.seed <= _SEED_MAX),
            "None or a 64-bit int")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            req(name, _is_real(value) and -2 <= value <= 2, "in [-2, 2]")
        req("repetition_penalty", _is_real(self.repetition_penalty) and self.repetition_penalty > 0, "> 0")
        req("max_tokens", _is_int(self.max_tokens) and self.max_tokens >= 1, "an int >= 1")
        req("min_tokens", _is_int(self.min_tokens) and 0 <= self.min_tokens <= self.max_tokens,
            f"an int in [0, max_tokens={self.max_tokens}]")
        req("stop", isinstance(self.stop, list) and all(isinstance(s, str) and s for s in self.stop),
            "a string or a list of non-empty strings")
        req("stop_token_ids", isinstance(self.stop_token_ids, list)
            and all(_is_int(t) and t >= 0 for t in self.stop_token_ids), "a list of token ids >= 0")
        req("ignore_eos", isinstance(self.ignore_eos, bool), "a bool")
        req("logprobs", self.logprobs is None or (_is_int(self.logprobs) and 0 <= self.logprobs <= MAX_LOGPROBS),
            f"None or an int in [0, {MAX_LOGPROBS}]")
        req("use_beam_search", isinstance(self.use_beam_search, bool), "a bool")
        if self.use_beam_search:  # vLLM's beam search is deterministic and its width is best_of
            req("best_of", (self.best_of or self.n) > 1, "> 1 when using beam search (it is the beam width)")
            req("temperature", self.temperature < SAMPLING_EPS, "0 when using beam search")
            req("top_p", self.top_p == 1, "1 when using beam search")
            req("top_k", self.top_k in (-1, 0), "-1 or 0 when using beam search")
