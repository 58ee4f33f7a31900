"""FLOP counts against torch's own counter on a real forward pass, and a hand-worked attention count."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from grserve.bench.flops import attention_flops, linear_flops, peak_matmul_flops, request_flops
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
    P, W = 10, 3
    pairs = P * P / 2 + W * ((P + 1) + (P + 2))
    assert attention_flops(config, 1) == 2 * 2 * 2 * 4 * 8
    assert request_flops(config, P, W) == pytest.approx(linear_flops(config, P + 2 * W, 1 + 2 * W)
                                                        + attention_flops(config, pairs))


def test_peak_is_positive_and_finite():
    assert 1e6 < peak_matmul_flops(n=256, repeats=2) < 1e15
