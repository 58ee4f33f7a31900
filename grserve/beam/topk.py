"""Selecting the best `width` children over all beams of each request.

Each beam's candidates are first cut to its own top-k (k = width: no beam can contribute more) and come
out sorted. The global top-`width` then needs only candidates at or above a threshold that is already
known to be beaten `width` times: the `width`-th best of the first m columns (m columns hold at least
`width` candidates). Everything below it is dropped without being looked at, so the final selection runs
over a few columns instead of a full sort of all W×k candidates. `full_topk` is the plain version (one
top-k over everything), kept as the ablation and the oracle."""
from __future__ import annotations

import torch


def per_beam_topk(scores: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores [rows, D] (-inf = not a candidate) → (values, slots) [rows, min(width, D)], sorted."""
    return scores.topk(min(width, scores.shape[1]), dim=1)


def early_topk(values: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """values [R, B, k] sorted descending along k → (best [R, width'], beam [R, width'], column [R, width'])
    with width' = min(width, B*k), best first."""
    R, B, k = values.shape
    width = min(width, B * k)
    columns = -(-width // B)  # the first `columns` columns hold >= width candidates
    if columns < k:
        threshold = values[:, :, :columns].reshape(R, -1).topk(width, dim=1).values[:, -1]
        # Rows are sorted, so survivors are a prefix of each row: keep the longest prefix any row needs.
        keep = int((values >= threshold[:, None, None]).sum(2).max())
        values = values[:, :, :max(keep, columns)]
    best, flat = values.reshape(R, -1).topk(width, dim=1)
    return best, flat // values.shape[2], flat % values.shape[2]


def full_topk(values: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    R, B, k = values.shape
    best, flat = values.reshape(R, -1).topk(min(width, B * k), dim=1)
    return best, flat // k, flat % k
