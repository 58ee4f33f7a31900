"""Staged attention (xGR): a decode step of wide-beam requests, with the prompt KV read once per request.

Each row (beam) of a request attends to two key sets: the request's shared prompt KV and its own few decode
tokens. The shared stage runs all beam queries of a request against the prompt in one batched product, the
unshared stage each beam against its own tokens, and the merge combines the two partial softmaxes through
their log-sum-exp. Shared and unshared KV are never concatenated. `expanded_attention` computes the same the
Hugging Face way (prompt KV repeated per beam, one SDPA) and is the comparison for tests and benchmarks.

GQA: num_heads = G * num_kv_heads, query head h uses kv head h // G (HF's repeat_kv). Scale 1/sqrt(head_dim).
Products run in the input dtype and softmax statistics in float32, as in HF's eager attention. Plain tensor
code, device-agnostic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _softmax_attend(scores: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and float32 log-sum-exp of softmax(scores) over v [..., S, d]; scores: scaled float32 [..., S],
    masked keys at -inf, at least one key per row not. The scores are overwritten."""
    # One pass each for max, exp and sum, in place: the score tensor is the stage's one large intermediate
    # (torch.logsumexp would allocate two more of its size).
    peak = scores.amax(dim=-1, keepdim=True)
    probs = scores.sub_(peak).exp_()
    total = probs.sum(dim=-1, keepdim=True)
    # Normalizing the output (d wide) instead of the probabilities (S wide) saves a pass over the scores.
    out = torch.matmul(probs.to(v.dtype), v).float().div_(total)
    return out.to(v.dtype), (peak + total.log()).squeeze(-1)


def shared_stage(q: torch.Tensor, k_s: torch.Tensor, v_s: torch.Tensor,
                 valid_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All beams of each request against that request's prompt KV.

    q [R, W, H, d] (the W beam queries of request r), k_s, v_s [R, n_kv, P, d], valid_s bool [R, P] (False at
    left padding; each request needs at least one True) -> out [R, W, H, d], lse float32 [R, W, H].
    """
    R, W, H, d = q.shape
    n_kv = k_s.shape[1]
    G = H // n_kv
    # [R, W, n_kv, G, d] -> [R, n_kv, W*G, d]: every query that reads kv head n sits in one matrix, so one GEMM
    # per (request, kv head) reads the prompt once for all beams instead of once per beam.
    qg = q.reshape(R, W, n_kv, G, d).permute(0, 2, 1, 3, 4).reshape(R, n_kv, W * G, d)
    scores = torch.matmul(qg, k_s.transpose(-1, -2)).float().mul_(1.0 / math.sqrt(d))
    scores.masked_fill_(~valid_s[:, None, None, :], float("-inf"))
    out, lse = _softmax_attend(scores, v_s)
    out = out.reshape(R, n_kv, W, G, d).permute(0, 2, 1, 3, 4).reshape(R, W, H, d)
    return out, lse.reshape(R, n_kv, W, G).permute(0, 2, 1, 3).reshape(R, W, H)


def unshared_stage(q: torch.Tensor, k_u: torch.Tensor, v_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row against its own decode tokens.

    q [N, H, d], k_u, v_u [N, n_kv, t, d] (the row's t decode tokens, the current one included; all valid)
    -> out [N, H, d], lse float32 [N, H].
    """
    N, H, d = q.shape
    n_kv = k_u.shape[1]
    qg = q.reshape(N, n_kv, H // n_kv, d)
    scores = torch.matmul(qg, k_u.transpose(-1, -2)).float() * (1.0 / math.sqrt(d))
    out, lse = _softmax_attend(scores, v_u)
    return out.reshape(N, H, d), lse.reshape(N, H)


def merge(out_s: torch.Tensor, lse_s: torch.Tensor, out_u: torch.Tensor,
          lse_u: torch.Tensor) -> torch.Tensor:
    """Softmax over the union of two disjoint key sets from the two partial results: out [..., H, d], lse [..., H]."""
    lse = torch.logaddexp(lse_s, lse_u)
    w_s = torch.exp(lse_s - lse).unsqueeze(-1)
    w_u = torch.exp(lse_u - lse).unsqueeze(-1)
    return (w_s * out_s + w_u * out_u).to(out_s.dtype)


def staged_attention(q: torch.Tensor, k_s: torch.Tensor, v_s: torch.Tensor, valid_s: torch.Tensor,
                     k_u: torch.Tensor, v_u: torch.Tensor, rows: torch.Tensor | None = None,
                     width: int | None = None) -> torch.Tensor:
    """One decode step for R requests' beam rows.

    q [N, H, d]; k_s, v_s [R, n_kv, P, d]; valid_s bool [R, P]; k_u, v_u [N, n_kv, t, d] -> [N, H, d]. Rows are
    request-major, N = R*W (row = r * W + j), or packed: row i at slot rows[i] = r * width + j of an R x width
    grid, so requests may have different numbers of rows. The shared stage runs on the grid (absent slots as
    zero queries, whose results are dropped); the unshared stage and the merge on the rows alone.
    """
    N, H, d = q.shape
    R = k_s.shape[0]
    if rows is None:
        q_grid, width = q, N // R
    else:
        q_grid = q.new_zeros(R * width, H, d).index_copy_(0, rows, q)
    out_s, lse_s = shared_stage(q_grid.reshape(R, width, H, d), k_s, v_s, valid_s)
    out_s, lse_s = out_s.reshape(R * width, H, d), lse_s.reshape(R * width, H)
    if rows is not None:
        out_s, lse_s = out_s.index_select(0, rows), lse_s.index_select(0, rows)
    out_u, lse_u = unshared_stage(q, k_u, v_u)
    return merge(out_s, lse_s, out_u, lse_u)


def expand_prompt_kv(k_s: torch.Tensor, v_s: torch.Tensor, valid_s: torch.Tensor, k_u: torch.Tensor,
                     v_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The HF layout: each row's own copy of its request's prompt KV followed by its decode KV, and the key mask.

    Shapes as `staged_attention`; returns k, v [R*W, n_kv, P + t, d] and mask bool [R*W, 1, 1, P + t].
    """
    W = k_u.shape[0] // k_s.shape[0]
    k = torch.cat((k_s.repeat_interleave(W, dim=0), k_u), dim=2)
    v = torch.cat((v_s.repeat_interleave(W, dim=0), v_u), dim=2)
    decode = torch.ones(k_u.shape[0], k_u.shape[2], dtype=torch.bool, device=valid_s.device)
    mask = torch.cat((valid_s.repeat_interleave(W, dim=0), decode), dim=1)
    return k, v, mask[:, None, None, :]


def expanded_attention(q: torch.Tensor, k_s: torch.Tensor, v_s: torch.Tensor, valid_s: torch.Tensor,
                       k_u: torch.Tensor, v_u: torch.Tensor) -> torch.Tensor:
    """`staged_attention`'s result computed the HF way: prompt KV repeated per row, concatenated, one SDPA."""
    k, v, mask = expand_prompt_kv(k_s, v_s, valid_s, k_u, v_u)
    out = F.scaled_dot_product_attention(q.unsqueeze(2), k, v, attn_mask=mask, enable_gqa=True)
    return out.squeeze(2)
