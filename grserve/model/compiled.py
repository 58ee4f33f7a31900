"""Compiled layers (`--compile`): each decoder layer's dense work, the two methods around its attention
(`DecoderLayer.attention_inputs`: norm, q/k/v, RoPE; `finish`: o_proj, norm, MLP, residuals), compiled by
torch.compile (inductor) with dynamic shapes and warmed at start.

Attention stays eager: its KV layout is planned on the host per step (paged blocks, a decode mirror, beams
packed by request), and tracing it would specialise on every plan. The dense parts see only a batch's rows
and tokens, which compile symbolically; torch specialises a size of 1, so four shape classes (one row or
several, one token or several) cover every step, and `warm` compiles all four before the first request
waits on one. The layers share one graph per class: they differ in weights, which the graph takes as inputs.
"""
from __future__ import annotations

import functools
import logging

import torch
from torch import nn

from grserve.model.transformer import DecoderLayer, Transformer, rope_cos_sin

log = logging.getLogger(__name__)

COMPILED = ("attention_inputs", "finish")
# (rows, tokens) of each shape class: torch compiles 1 apart from any larger size, and 2 stands for those.
SHAPE_CLASSES = ((1, 1), (1, 2), (2, 1), (2, 2))
# Each model shape adds its four classes to the graphs kept per method; torch's default of 8 would send a
# third model shape (a server's LLM beside two GR models) back to eager.
RECOMPILE_LIMIT = 64
# The compiled methods, one per process, taking the layer as their first argument: every layer of every
# model (an engine restarted on its model, as the benchmarks' turns do, or a second model of the same shapes)
# reuses the graphs already compiled.
_compiled: dict = {}


def compile_layers(model: Transformer) -> bool:
    """Compiles `model`'s layers in place and warms every shape class. Where compiling fails (no C++
    compiler for inductor, an unsupported platform) the eager methods stay, the reason is logged, and
    False is returned: a server starts either way."""
    if not _compiled:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        _compiled.update({name: torch.compile(getattr(DecoderLayer, name), dynamic=True) for name in COMPILED})
    for layer in model.model.layers:
        layer.__dict__.update({name: functools.partial(_compiled[name], layer) for name in COMPILED})
    try:
        warm(model)
    except Exception as e:  # inductor's failures have no common type: any of them means "run eager"
        log.warning("torch.compile is unavailable here, the model runs eager: %s", str(e).splitlines()[0])
        uncompile(model)
        return False
    return True


def uncompile(model: Transformer) -> None:
    """Puts the eager methods back (the compiled ones are instance attributes over the class's)."""
    for layer in model.model.layers:
        for name in COMPILED:
            layer.__dict__.pop(name, None)


def is_compiled(model: nn.Module) -> bool:
    return any(name in layer.__dict__ for layer in model.model.layers for name in COMPILED)


@torch.no_grad()
def warm(model: Transformer) -> None:
    """Runs every layer's dense parts once per shape class on zeros, so each class is compiled here."""
    c = model.config
    weight = model.model.embed_tokens.weight
    for rows, tokens in SHAPE_CLASSES:
        x = torch.zeros(rows, tokens, c.hidden_size, dtype=weight.dtype, device=weight.device)
        positions = torch.arange(tokens, device=weight.device).expand(rows, tokens)
        cos, sin = rope_cos_sin(positions, c.head_dim, c.rope_theta, x.dtype)
        attended = x.new_zeros(rows, tokens, c.num_attention_heads * c.head_dim)
        for layer in model.model.layers:
            layer.attention_inputs(x, cos, sin)
            layer.finish(x, attended)
