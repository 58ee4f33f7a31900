"""Sampler against hand-worked penalties, the support and frequencies of many draws, seeded reproducibility
across batch compositions, and logprobs recomputed with log_softmax."""
from __future__ import annotations

import math

import pytest
import torch

from grserve.sampling import Sampler, SamplingParams, make_generator

INF = math.inf
sampler = Sampler()


def draws(logits: list[float], params: SamplingParams, count: int, seed: int = 0) -> torch.Tensor:
    """`count` independent draws from one row: the row repeated `count` times in one batch."""
    torch.manual_seed(seed)
    batch = torch.tensor(logits).expand(count, -1)
    return sampler.sample(batch, [params] * count, [None] * count)[0]


def frequencies(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=vocab).double() / len(tokens)


# --- penalties ---------------------------------------------------------------------------------------

def penalise(logits, output, prompt, **kwargs) -> list[float]:
    return sampler.apply_penalties(torch.tensor([logits]), [output], [prompt],
                                   [SamplingParams(**kwargs)], eos_token_id=4)[0].tolist()


def test_repetition_penalty_divides_positive_and_multiplies_negative_over_prompt_and_output():
    # token 0 seen in the prompt (2 → 1), token 1 in the output (-2 → -4), tokens 2 and 3 unseen.
    assert penalise([2.0, -2.0, 1.0, 0.5], [1], [0], repetition_penalty=2.0) == [1.0, -4.0, 1.0, 0.5]


def test_frequency_penalty_counts_output_occurrences_only():
    # token 1 three times, token 3 once in the output; token 2 only in the prompt: untouched.
    assert penalise([0.0] * 5, [1, 1, 3, 1], [2], frequency_penalty=0.5) == [0, -1.5, 0, -0.5, 0]


def test_presence_penalty_once_per_present_token():
    assert penalise([0.0] * 5, [1, 1, 3, 1], [2], presence_penalty=0.25) == [0, -0.25, 0, -0.25, 0]


def test_penalties_combine_and_rows_are_independent():
    logits = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    params = [SamplingParams(repetition_penalty=2.0, frequency_penalty=0.5, presence_penalty=0.25),
              SamplingParams()]
    out = sampler.apply_penalties(logits, [[0, 0], [0, 0]], [[2], [2]], params)
    # row 0: token 0 → 1/2 - 2·0.5 - 0.25; token 2 (prompt) → 1/2; row 1 has no penalties.
    assert out.tolist() == [[-0.75, 1.0, 0.5], [1.0, 1.0, 1.0]]
    assert logits.tolist() == [[1.0] * 3] * 2  # input untouched


def test_min_tokens_masks_eos_and_stop_token_ids_until_reached():
    logits = [1.0] * 5
    assert penalise(logits, [0], [], min_tokens=2, stop_token_ids=[2]) == [1, 1, -INF, 1, -INF]
    assert penalise(logits, [0, 1], [], min_tokens=2, stop_token_ids=[2]) == logits
    # With ignore_eos, EOS does not stop the request, so only the stop ids need masking.
    assert penalise(logits, [], [], min_tokens=1, ignore_eos=True, stop_token_ids=[2]) == [1, 1, -INF, 1, 1]


# --- sampling ----------------------------------------------------------------------------------------

def test_greedy_and_top_k_1_are_argmax():
    torch.manual_seed(0)
    logits = torch.randn(6, 20)
    params = [SamplingParams(temperature=0)] * 3 + [SamplingParams(top_k=1, temperature=1.5)] * 3
    tokens, _, _ = sampler.sample(logits, params, [None] * 6)
    assert torch.equal(tokens, logits.argmax(dim=-1))


def test_tiny_top_p_keeps_only_the_top_token():
    logits = [0.1, 0.3, 0.2, 0.25, 0.0]
    assert set(draws(logits, SamplingParams(top_p=1e-6), 2000).tolist()) == {1}


PROBS = [0.4, 0.3, 0.15, 0.1, 0.05]
LOG_PROBS = [math.log(p) for p in PROBS]


def test_min_p_drops_exactly_the_tokens_below_threshold():
    # threshold 0.3 · 0.4 = 0.12: tokens 0, 1, 2 stay.
    assert set(draws(LOG_PROBS, SamplingParams(min_p=0.3), 5000).tolist()) == {0, 1, 2}


def test_top_k_3_never_samples_outside_the_top_3():
    logits = [0.5, 2.0, -1.0, 1.5, 0.0, 1.8, 1.0, -0.5]
    assert set(draws(logits, SamplingParams(top_k=3), 5000).tolist()) == {1, 3, 5}


@pytest.mark.parametrize("top_p, support", [(0.65, {0, 1}), (0.75, {0, 1, 2})])
def test_top_p_keeps_the_smallest_prefix_reaching_top_p(top_p, support):
    # cumulative mass 0.4, 0.7, 0.85, ...: the prefix reaching 0.65 is {0, 1}, reaching 0.75 is {0, 1, 2}.
    assert set(draws(LOG_PROBS, SamplingParams(top_p=top_p), 5000).tolist()) == support


def test_top_k_then_top_p_frequencies_match_renormalised_oracle():
    # top_k=4 renormalises to [.4, .3, .15, .1]/.95; mass before token 3 is .85/.95 ≈ .895 ≥ 0.8: dropped.
    tokens = draws(LOG_PROBS, SamplingParams(top_k=4, top_p=0.8), 20000)
    expected = torch.tensor([0.4, 0.3, 0.15, 0, 0], dtype=torch.float64) / 0.85
    assert (frequencies(tokens, 5) - expected).abs().max() < 0.02


def test_unconstrained_frequencies_match_softmax_over_temperature():
    logits = [1.0, 0.2, -0.5, 0.7, 0.0, -1.2, 0.4, 0.9]
    tokens = draws(logits, SamplingParams(temperature=0.7), 20000)
    expected = torch.softmax(torch.tensor(logits, dtype=torch.float64) / 0.7, dim=0)
    assert (frequencies(tokens, 8) - expected).abs().max() < 0.02


def test_temperature_towards_zero_approaches_greedy():
    logits = [0.2, 1.0, 0.5, -0.3, 0.9]
    assert set(draws(logits, SamplingParams(temperature=1e-2), 2000).tolist()) == {1}
    # and a high temperature does not: it is a real sampling path, not the greedy one.
    assert len(set(draws(logits, SamplingParams(temperature=2.0), 2000).tolist())) == 5


def test_seeded_row_reproducible_regardless_of_batch():
    torch.manual_seed(0)
    mine = torch.randn(12)
    seeded = SamplingParams(seed=1234)

    def run(position: int, others: list[SamplingParams], steps: int = 8) -> list[int]:
        params = others[:position] + [seeded] + others[position:]
        generators = [make_generator(p.seed) for p in params]
        tokens = []
        for _ in range(steps):
            logits = torch.randn(len(params), 12)  # other rows and the global RNG change every step
            logits[position] = mine
            tokens.append(sampler.sample(logits, params, generators)[0][position].item())
        return tokens

    alone = run(0, [])
    assert len(set(alone)) > 1  # actually random, not a constant
    assert run(2, [SamplingParams(), SamplingParams(temperature=0), SamplingParams(seed=5)]) == alone
    assert run(1, [SamplingParams(top_k=3), SamplingParams(seed=1234)]) == alone  # same seed twice
    assert run(0, [SamplingParams(temperature=0.3)] * 4) == alone


def test_logprobs_are_log_softmax_of_penalised_logits_and_top_list_sorted():
    torch.manual_seed(0)
    logits = torch.randn(3, 10)
    params = [SamplingParams(temperature=0.5, logprobs=3, repetition_penalty=1.5, presence_penalty=0.5),
              SamplingParams(temperature=0, logprobs=0), SamplingParams(top_k=2)]
    output, prompt = [[1, 2, 2], [3], []], [[4], [5], [6]]
    penalised = sampler.apply_penalties(logits, output, prompt, params)
    tokens, token_logprobs, top = sampler.sample(penalised, params, [None] * 3)
    # Oracle: the penalised logits recomputed by hand for row 0, then log_softmax (no temperature).
    row0 = logits[0].clone()
    for t in (1, 2, 4):
        row0[t] = row0[t] / 1.5 if row0[t] > 0 else row0[t] * 1.5
    row0[[1, 2]] -= 0.5
    expected = torch.log_softmax(torch.stack([row0, logits[1], logits[2]]).double(), dim=-1)
    torch.testing.assert_close(token_logprobs.double(), expected[torch.arange(3), tokens], atol=1e-5, rtol=0)
    assert top[1] == [] and top[2] == []
    assert [t for t, _ in top[0]] == expected[0].argsort(descending=True)[:3].tolist()
    values = [v for _, v in top[0]]
    assert values == sorted(values, reverse=True)
    best = expected[0].sort(descending=True).values[:3]
    torch.testing.assert_close(torch.tensor(values, dtype=torch.float64), best, atol=1e-5, rtol=0)
