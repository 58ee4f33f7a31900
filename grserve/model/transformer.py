"""grserve's own forward for Llama- and Qwen3-layout decoder-only models.

Parameter names equal the Hugging Face state-dict names, so checkpoints load without renaming. The forward
takes explicit positions, an optional boolean mask and an optional per-layer KV cache, and returns the cache
extended by the new tokens: enough for left-padded prefill and batched decode. Instead of a cache, `past` may
be an `AttentionBackend` that keeps the KV itself and computes attention its own way (the separated KV cache
with staged attention does); the model only hands it each layer's new q, k, v. Plain tensor code, readable top
to bottom; it is also the oracle the faster attention paths are tested against.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from grserve.model.config import ModelConfig

# One (keys, values) per layer, each [batch, num_kv_heads, seq, head_dim]; keys already rotated.
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@runtime_checkable
class AttentionBackend(Protocol):
    """Owns the KV of a forward's past and attends over it; passed as `past` in place of a KVCache."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store the new tokens' k, v [B, num_kv_heads, T, head_dim] (rotated, normed) for `layer`, and return the
        attention output [B, num_heads, T, head_dim] of q [B, num_heads, T, head_dim] over past and new keys."""
        ...


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # HF's x * rsqrt(mean(x^2) + eps) in one fused op (bit for bit the same in float32, 2.5x faster at
        # decode sizes), taken in float32 as in HF, where half precision loses too many digits; the weight
        # multiplies after the cast back, as in HF.
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos and sin of the rotary angles at `positions` [B, T], shaped [B, 1, T, head_dim] to broadcast over heads."""
    # Angles in float32 whatever the model dtype: large positions need the mantissa. Computed per call rather
    # than cached, so any position is valid and the model holds no buffer for `.to(dtype)` to round.
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    inv_freq = 1.0 / theta**exponents
    angles = positions.float()[..., None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1)[:, None]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    # HF's RoPE layout pairs dimension i with i + head_dim/2, not adjacent dimensions.
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, dropout: float = 0.0):
        super().__init__()
        self.layer = layer
        self.dropout = dropout
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)
        # q, k and v as one GEMM, where `pack_linears` fused them (serving only); None: the three above.
        self.qkv_proj: nn.Module | None = None
        self.qkv_sizes = [self.num_heads * self.head_dim] + 2 * [self.num_kv_heads * self.head_dim]
        # Qwen3 normalizes each query and key head before RoPE, which bounds the attention logits.
        self.qk_norm = config.architecture == "Qwen3ForCausalLM"
        if self.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """q [B, H, T, d], k, v [B, n_kv, T, d] of the normed input x [B, T, hidden]; q and k rotated."""
        B, T, _ = x.shape
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).split(self.qkv_sizes, dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(B, T, self.num_heads, self.head_dim)
        k = k.view(B, T, self.num_kv_heads, self.head_dim)
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool,
               past: tuple[torch.Tensor, torch.Tensor] | AttentionBackend | None):
        """The attention output [B, T, H * d] (before o_proj) and this layer's cache entry."""
        B, _, T, _ = q.shape
        # hasattr is the Protocol's own structural test, without isinstance's microseconds per layer.
        if hasattr(past, "attend"):
            return past.attend(self.layer, q, k, v).transpose(1, 2).reshape(B, T, -1), past
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True,
                                             dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2).reshape(B, T, -1), (k, v)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.gate_up_proj: nn.Module | None = None  # gate and up as one GEMM, as qkv_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:  # serving only: in place in the GEMM's output, 8% of a 1,024-token step
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate, inplace=True).mul_(up))
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        self.self_attn = Attention(config, layer, dropout)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    # The layer's dense work is two methods around the attention, so that `compile_layers` can compile them
    # alone: attention over a backend's KV is host-planned and stays eager.
    def attention_inputs(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Input norm, q/k/v projections, (Qwen3's q/k norms,) RoPE: q, k, v of the residual stream x."""
        return self.self_attn.project(self.input_layernorm(x), cos, sin)

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """o_proj and the MLP, each added to the residual stream x."""
        x = x + F.dropout(self.self_attn.o_proj(attended), self.dropout, self.training)
        return x + F.dropout(self.mlp(self.post_attention_layernorm(x)), self.dropout, self.training)

    def forward(self, x, cos, sin, mask, causal, past):
        q, k, v = self.attention_inputs(x, cos, sin)
        attended, kv = self.self_attn.attend(q, k, v, mask, causal, past)
        return self.finish(x, attended), kv


class Decoder(nn.Module):
    """The `model.` part of the HF names: embeddings, layers, final norm; returns hidden states."""

    def __init__(self, config: ModelConfig, dropout: float = 0.0):
        super().__init__()
        self.config = config
        self.dropout = dropout
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i, dropout) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None,
                past: KVCache | AttentionBackend | None) -> tuple[torch.Tensor, KVCache | AttentionBackend]:
        x = F.dropout(self.embed_tokens(input_ids), self.dropout, self.training)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        if isinstance(past, AttentionBackend):
            # The backend knows which past keys each row may see; a mask here would be a second, unused truth.
            if mask is not None:
                raise ValueError("mask: must be None when past is an AttentionBackend")
            for layer in self.layers:
                x, _ = layer(x, cos, sin, None, False, past)
            return self.norm(x), past

        T = input_ids.shape[1]
        if past is not None and len(past) != len(self.layers):
            raise ValueError(f"past: {len(past)} entries for {len(self.layers)} layers")
        past_len = past[0][0].shape[2] if past is not None else 0
        S = past_len + T
        # A query row that may see no key (a left-pad token) is fine: SDPA gives it a zero output, not NaN, so
        # padded rows stay finite and cannot poison real ones through the next layer's masked-out values.
        if mask is not None and (mask.dtype != torch.bool or mask.shape[-2:] != (T, S)):
            raise ValueError(f"mask: expected bool [B, 1, {T}, {S}], got {mask.dtype} {list(mask.shape)}")
        # SDPA's own causal mask is aligned top-left, which is right only when there is no past.
        causal = mask is None and past_len == 0
        if mask is None and not causal:
            mask = torch.ones(T, S, dtype=torch.bool, device=input_ids.device).tril(past_len)

        cache = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, cos, sin, mask, causal, past[i] if past is not None else None)
            cache.append(kv)
        return self.norm(x), cache


class Transformer(nn.Module):
    """A causal LM: `forward(input_ids, positions, mask=None, past=None) -> (float32 logits, cache)`.

    input_ids, positions: [B, T]. mask: bool [B, 1, T, S], True where query t may attend key s, over all
    S = past_len + T keys; None means causal over the new tokens with full access to the past. past and the
    returned cache: one (k, v) per layer, [B, num_kv_heads, S, head_dim]; the returned one includes the new
    tokens. past may instead be an AttentionBackend (mask then None), which is returned as the cache. Freshly
    built weights are PyTorch's default initialization; real ones come from `load_model`.

    `dropout` (training only, as in SASRec) drops the token embeddings, the attention probabilities and each
    residual branch while the module is in train mode; in eval mode, where serving runs, it does nothing, so a
    trained model's answers do not depend on it and it is not part of config.json.
    """

    def __init__(self, config: ModelConfig, dropout: float = 0.0):
        super().__init__()
        self.config = config
        self.model = Decoder(config, dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
        past: KVCache | AttentionBackend | None = None,
    ) -> tuple[torch.Tensor, KVCache | AttentionBackend]:
        hidden, cache = self.model(input_ids, positions, mask, past)
        return self.lm_head(hidden).float(), cache
