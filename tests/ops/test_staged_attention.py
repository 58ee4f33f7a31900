"""Staged attention against the expanded (HF) computation and a naive per-beam, per-head softmax loop."""

import math

import pytest
import torch

from grserve.ops import expanded_attention, merge, shared_stage, staged_attention, unshared_stage


def naive_attention(q, k_s, v_s, valid_s, k_u, v_u):
    """Each row, each head alone: its request's real prompt keys then its own decode keys, one softmax."""
    N, H, d = q.shape
    R, n_kv = k_s.shape[:2]
    W, G = N // R, H // n_kv
    out = torch.empty_like(q)
    for row in range(N):
        real = valid_s[row // W]
        for h in range(H):
            keys = torch.cat((k_s[row // W, h // G, real], k_u[row, h // G]))
            values = torch.cat((v_s[row // W, h // G, real], v_u[row, h // G]))
            weights = torch.softmax(keys @ q[row, h] / math.sqrt(d), dim=0)
            out[row, h] = weights @ values
    return out


def random_step(R=3, W=4, H=4, n_kv=2, d=8, lengths=(6, 2, 4), t=2, seed=0):
    """Inputs of one decode step: R left-padded prompts of the given real lengths, W rows each, t decode tokens."""
    g = torch.Generator().manual_seed(seed)
    P = max(lengths)
    q = torch.randn(R * W, H, d, generator=g)
    k_s, v_s = torch.randn(2, R, n_kv, P, d, generator=g)
    k_u, v_u = torch.randn(2, R * W, n_kv, t, d, generator=g)
    valid_s = torch.arange(P) >= P - torch.tensor(lengths)[:, None]
    # Large values at the padded keys: a mask that leaks shows at once.
    k_s[~valid_s[:, None, :, None].expand_as(k_s)] = 50.0
    v_s[~valid_s[:, None, :, None].expand_as(v_s)] = 1e4
    return q, k_s, v_s, valid_s, k_u, v_u


@pytest.mark.parametrize("t", [1, 2])
@pytest.mark.parametrize(("H", "n_kv"), [(4, 2), (4, 4), (6, 1)])
def test_staged_equals_expanded_and_naive(H, n_kv, t):
    inputs = random_step(H=H, n_kv=n_kv, t=t)
    expected = naive_attention(*inputs)
    torch.testing.assert_close(staged_attention(*inputs), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(expanded_attention(*inputs), expected, atol=1e-5, rtol=1e-5)


def test_stages_give_the_log_sum_exp_of_their_keys():
    q, k_s, v_s, valid_s, k_u, v_u = random_step(R=2, W=3, lengths=(5, 3))
    N, H, d = q.shape
    _, lse_s = shared_stage(q.reshape(2, 3, H, d), k_s, v_s, valid_s)
    _, lse_u = unshared_stage(q, k_u, v_u)
    assert lse_s.dtype == lse_u.dtype == torch.float32
    row, h = 4, 3  # request 1, kv head 1
    scores_s = k_s[1, 1, valid_s[1]] @ q[row, h] / math.sqrt(d)
    scores_u = k_u[row, 1] @ q[row, h] / math.sqrt(d)
    torch.testing.assert_close(lse_s[1, 1, h], torch.logsumexp(scores_s, 0))
    torch.testing.assert_close(lse_u[row, h], torch.logsumexp(scores_u, 0))


def test_merge_of_two_single_key_halves_by_hand():
    # Shared half: one key of score 0 and value 4; unshared half: one key of score log 3 and value 8. A softmax
    # over both keys weighs them 1/4 and 3/4: 0.25 * 4 + 0.75 * 8 = 7.
    out_s, lse_s = torch.tensor([[[4.0]]]), torch.tensor([[0.0]])
    out_u, lse_u = torch.tensor([[[8.0]]]), torch.tensor([[math.log(3.0)]])
    torch.testing.assert_close(merge(out_s, lse_s, out_u, lse_u), torch.tensor([[[7.0]]]))


def test_bfloat16_stays_close_to_float32():
    inputs = random_step(t=1)
    expected = staged_attention(*inputs)
    half = staged_attention(*(x.bfloat16() if x.is_floating_point() else x for x in inputs))
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), expected, atol=0.05, rtol=0.05)
