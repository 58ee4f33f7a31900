"""FLOP counts against torch's own counter on a real forward pass, and a hand-worked attention count."""
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from grserve.bench.flops import attention_flops, linear_flops, live_rows, peak_matmul_flops, request_flops
from tests.conftest import make_bundle


def test_linear_flops_match_torch_counter():
    model = make_bundle(num_items=50, codebook_size=4).model
    P = 40
    ids = torch.randint(3, model.config.vocab_size, (1, P))
    with FlopCounterMode(display=False) as counter:
        model(ids, torch.arange(P)[None])
    # torch counts every matmul (the forward computes logits at all P positions); SDPA on CPU is not counted
    assert counter.get_total_flops() == linear_flops(model.config, P, P)


def test_request_flops_by_hand():
    config = make_bundle(num_items=50, codebook_size=4).model.config  # 2 layers, 4 heads of 8
    P = 10
    pairs = P * P / 2 + 3 * (P + 1) + 2 * (P + 2)  # 3 rows in the first decode round, 2 in the second
    assert attention_flops(config, 1) == 2 * 2 * 2 * 4 * 8
    assert request_flops(config, P, [3, 2]) == pytest.approx(linear_flops(config, P + 5, 1 + 5)
                                                             + attention_flops(config, pairs))


def test_live_rows_are_bounded_by_distinct_prefixes():
    # first-level codes {0, 1}: 2 distinct; two-level prefixes (0,0), (0,1), (1,0): 3 distinct
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 0, 2]])
    assert live_rows(codes, beam_width=8) == [2, 3]
    assert live_rows(codes, beam_width=2) == [2, 2]


def test_peak_is_positive_and_finite():
    assert 1e6 < peak_matmul_flops(n=256, repeats=2) < 1e15


def test_peak_shrinks_the_matmul_to_its_time_cap(monkeypatch):
    sizes = []
    real_randn = torch.randn

    def randn(*shape, **kw):
        sizes.append(shape[0])
        return real_randn(*shape, **kw)
    monkeypatch.setattr(torch, "randn", randn)
    peak_matmul_flops(n=4096, repeats=1, max_seconds=0.0)  # no time at all: the smallest matmul after the probe
    assert sizes[0] == 256 and set(sizes[1:]) == {256}
