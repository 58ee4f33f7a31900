"""SamplingParams: vLLM's defaults, one ValueError per bad field naming it, and the greedy property."""
from __future__ import annotations

import math

import pytest

from grserve.sampling import SamplingParams


def test_defaults_are_vllms():
    p = SamplingParams()
    assert (p.n, p.temperature, p.top_p, p.top_k, p.min_p, p.seed) == (1, 1.0, 1.0, -1, 0.0, None)
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.0, 0.0, 1.0)
    assert (p.max_tokens, p.min_tokens, p.stop, p.stop_token_ids) == (16, 0, [], [])
    assert (p.ignore_eos, p.logprobs, p.use_beam_search, p.best_of) == (False, None, False, None)
    assert SamplingParams().stop is not p.stop  # no shared mutable default


@pytest.mark.parametrize("kwargs, field", [
    ({"n": 0}, "n"),
    ({"n": 1.5}, "n"),
    ({"n": 3, "best_of": 2}, "best_of"),
    ({"temperature": -1}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.01}, "top_p"),
    ({"top_k": -2}, "top_k"),
    ({"top_k": 2.0}, "top_k"),
    ({"min_p": -0.1}, "min_p"),
    ({"min_p": 1.1}, "min_p"),
    ({"seed": "7"}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -2.1}, "frequency_penalty"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"min_tokens": -1}, "min_tokens"),
    ({"min_tokens": 17}, "min_tokens"),  # > max_tokens (16)
    ({"stop": [""]}, "stop"),
    ({"stop": [3]}, "stop"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ({"stop_token_ids": 2}, "stop_token_ids"),
    ({"ignore_eos": 1}, "ignore_eos"),
    ({"logprobs": -1}, "logprobs"),
    ({"logprobs": 21}, "logprobs"),
    ({"use_beam_search": "yes"}, "use_beam_search"),
    ({"use_beam_search": True, "temperature": 0}, "best_of"),  # beam width 1
    ({"use_beam_search": True, "best_of": 4}, "temperature"),
    ({"use_beam_search": True, "best_of": 4, "temperature": 0, "top_p": 0.9}, "top_p"),
    ({"use_beam_search": True, "best_of": 4, "temperature": 0, "top_k": 5}, "top_k"),
])
def test_bad_field_raises_naming_it(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field} must be .*, got "):
        SamplingParams(**kwargs)


def test_edge_values_accepted():
    SamplingParams(temperature=0, top_p=1, top_k=0, min_p=1.0, seed=-1, presence_penalty=-2,
                   frequency_penalty=2, repetition_penalty=0.5, max_tokens=1, min_tokens=1,
                   stop_token_ids=[0], logprobs=20, n=2, best_of=2)
    SamplingParams(logprobs=0)
    SamplingParams(use_beam_search=True, best_of=4, temperature=0)


def test_single_stop_string_becomes_a_list():
    assert SamplingParams(stop="\n\n").stop == ["\n\n"]


@pytest.mark.parametrize("kwargs, greedy", [
    ({}, False), ({"temperature": 0}, True), ({"temperature": 0.0, "top_k": 5}, True),
    ({"top_k": 1}, True), ({"temperature": 0.01}, False), ({"top_k": 2}, False), ({"top_p": 1e-6}, False),
])
def test_greedy(kwargs, greedy):
    assert SamplingParams(**kwargs).greedy is greedy
