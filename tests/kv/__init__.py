"""The scenario both GR KV caches are tested on: a tiny model prefills left-padded prompts, then decodes the cache's
rounds of beams (L - 1 for SIDs of L levels), each beam checked against a plain forward of its whole sequence."""

import torch

from grserve.model import ModelConfig, Transformer

ARCHITECTURES = ["LlamaForCausalLM", "Qwen3ForCausalLM"]


def tiny_model(architecture: str) -> Transformer:
    # GQA (4 query heads on 2 kv heads); Qwen3 with a head_dim unequal to hidden/heads, as real Qwen3 has.
    config = ModelConfig(architecture=architecture, vocab_size=64, hidden_size=32, intermediate_size=48,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16 if architecture == "Qwen3ForCausalLM" else None)
    torch.manual_seed(0)
    model = Transformer(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)  # far from uniform logits, so a wrong key shows
    return model


def prefill(model: Transformer, prompts: list[torch.Tensor]):
    """Left-padded batched prefill: (cache, valid [R, P], real lengths [R])."""
    P = max(len(p) for p in prompts)
    ids = torch.stack([torch.cat((torch.zeros(P - len(p), dtype=torch.long), p)) for p in prompts])
    valid = torch.arange(P) >= P - torch.tensor([len(p) for p in prompts])[:, None]
    positions = (valid.cumsum(1) - 1).clamp(min=0)
    mask = torch.ones(P, P, dtype=torch.bool).tril() & valid[:, None, None, :]
    _, cache = model(ids, positions, mask)
    return cache, valid, valid.sum(1)


@torch.no_grad()
def check_beam_rounds(model: Transformer, cache, lengths: list[int], width: int, seed: int) -> None:
    """Prefill prompts of `lengths`, `cache.begin`, then per round: a random within-request parent (forks and
    retirements), `cache.reorder`, one arbitrary token per row at position P_r + i, logits compared."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(1, 64, (n,), generator=g) for n in lengths]
    shared, valid, real = prefill(model, prompts)
    cache.begin(shared, valid, width)
    N = len(prompts) * width
    request = torch.arange(N) // width
    sequences = [prompts[r] for r in request]
    for i in range(cache.max_steps):
        parent = request * width + torch.randint(0, width, (N,), generator=g)
        cache.reorder(parent)
        tokens = torch.randint(1, 64, (N, 1), generator=g)
        logits, returned = model(tokens, (real[request] + i)[:, None], past=cache)
        assert returned is cache
        sequences = [torch.cat((sequences[p], tokens[row])) for row, p in enumerate(parent)]
        for row, seq in enumerate(sequences):
            expected, _ = model(seq[None], torch.arange(len(seq))[None])
            torch.testing.assert_close(logits[row, 0], expected[0, -1], atol=1e-4, rtol=1e-4)
