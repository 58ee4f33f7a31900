"""Early-terminated selection against a plain sort of every candidate."""
import pytest
import torch

from grserve.beam.topk import early_topk, full_topk, per_beam_topk


def oracle(values: torch.Tensor, width: int):
    out = []
    for r in range(values.shape[0]):
        flat = [(v, b, c) for b in range(values.shape[1]) for c in range(values.shape[2])
                for v in [values[r, b, c].item()]]
        out.append(sorted(flat, key=lambda t: -t[0])[:width])
    return out


@pytest.mark.parametrize("R,B,k,width", [(1, 1, 5, 3), (3, 8, 8, 8), (2, 16, 16, 5), (2, 4, 3, 20),
                                         (4, 32, 32, 32), (1, 7, 2, 14)])
@pytest.mark.parametrize("select", [early_topk, full_topk])
def test_selection_equals_sorting_everything(R, B, k, width, select):
    g = torch.Generator().manual_seed(R * 100 + B + k + width)
    scores = torch.randn(R * B, 40, generator=g)
    scores[torch.rand(R * B, 40, generator=g) < 0.3] = float("-inf")  # closed children
    values, _ = per_beam_topk(scores, k)
    values = values.view(R, B, -1)
    best, beam, column = select(values, width)
    for r, expected in enumerate(oracle(values, width)):
        assert best[r].tolist() == [v for v, _, _ in expected]
        # (beam, column) point back at the value selected
        assert torch.equal(values[r, beam[r], column[r]], best[r])
