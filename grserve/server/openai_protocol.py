"""OpenAI-compatible request bodies (/v1/completions, /v1/chat/completions), with vLLM's extra sampling
fields, turned into SamplingParams."""
from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from grserve.sampling.params import SamplingParams


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Union[str, list[str], None] = None
    stop_token_ids: list[int] = Field(default_factory=list)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    ignore_eos: bool = False
    user: str | None = None
    priority: Literal["online", "offline"] = "online"
    # grserve's extension, as on the GR routes: answer 504 (or end the stream with an error event) once this
    # many milliseconds have passed, and stop generating. None: no deadline.
    timeout_ms: int | None = Field(None, ge=1)
    use_beam_search: bool = False  # vLLM's extension: n best of a beam of width best_of
    best_of: int | None = Field(None, ge=1, le=64)
    length_penalty: float = 1.0

    def sampling(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              min_p=self.min_p, seed=self.seed, presence_penalty=self.presence_penalty,
                              frequency_penalty=self.frequency_penalty, repetition_penalty=self.repetition_penalty,
                              max_tokens=max_tokens, min_tokens=self.min_tokens, stop=stop,
                              stop_token_ids=list(self.stop_token_ids), ignore_eos=self.ignore_eos,
                              logprobs=logprobs, use_beam_search=self.use_beam_search, best_of=self.best_of,
                              length_penalty=self.length_penalty)


class CompletionRequest(_Sampling):
    prompt: Union[str, list[int], list[str], list[list[int]]]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    # GR models: `prompt` as token ids, `beam_width`, `max_tokens`: the SID's levels → the best SIDs (xLLM's rec API)
    beam_width: int | None = Field(None, ge=1)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str
    name: str | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def template_messages(self) -> list[dict]:
        """The messages as the chat template takes them (unset fields left out)."""
        return [m.model_dump(exclude_none=True) for m in self.messages]
