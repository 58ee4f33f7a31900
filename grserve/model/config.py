"""Model hyperparameters: the part of a Hugging Face `config.json` that grserve's forward needs.

Reads and writes `config.json`, so a model saved by grserve loads in transformers and the other way round.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

# Architecture named in config.json -> the model_type transformers registers it under.
MODEL_TYPES = {"LlamaForCausalLM": "llama", "Qwen3ForCausalLM": "qwen3"}

# Settings of those architectures that grserve's forward does not implement: (key, the only supported value).
_UNSUPPORTED = (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False), ("use_sliding_window", False))


@dataclass
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        if self.architecture not in MODEL_TYPES:
            raise ValueError(f"architecture: {self.architecture!r} is not one of {sorted(MODEL_TYPES)}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_key_value_heads: {self.num_key_value_heads} does not divide "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"head_dim: not given, and hidden_size {self.hidden_size} is not a multiple "
                                 f"of num_attention_heads {self.num_attention_heads}")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.head_dim <= 0 or self.head_dim % 2:
            raise ValueError(f"head_dim: must be positive and even (RoPE rotates pairs), got {self.head_dim}")
        if self.rms_norm_eps <= 0:
            raise ValueError(f"rms_norm_eps: must be positive, got {self.rms_norm_eps}")
        if self.rope_theta <= 0:
            raise ValueError(f"rope_theta: must be positive, got {self.rope_theta}")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            token = getattr(self, name)
            if token is not None and not 0 <= token < self.vocab_size:
                raise ValueError(f"{name}: {token} is outside the vocabulary [0, {self.vocab_size})")

    def to_hf_dict(self) -> dict:
        d = {"architectures": [self.architecture], "model_type": MODEL_TYPES[self.architecture]}
        d.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "architecture"})
        # transformers 5 reads the RoPE base from `rope_parameters` (it moves a top-level `rope_theta` there);
        # transformers 4 and vLLM read the top-level key. Both are written so every reader gets the same RoPE.
        d["rope_parameters"] = {"rope_type": "default", "rope_theta": self.rope_theta}
        # `dtype`, not the `torch_dtype` that transformers 5 reports as deprecated.
        d.update(hidden_act="silu", attention_bias=False, mlp_bias=False, dtype="float32")
        return d

    @classmethod
    def from_hf_dict(cls, d: dict) -> ModelConfig:
        architectures = d.get("architectures") or []
        if len(architectures) != 1:
            raise ValueError(f"architectures: expected exactly one, got {architectures}")
        for key, supported in _UNSUPPORTED:
            if d.get(key, supported) != supported:
                raise ValueError(f"{key}: {d[key]!r} is not supported, only {supported!r}")
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"rope_parameters: rope_type {rope_type!r} is not supported, only 'default'")
        eos = d.get("eos_token_id")
        if isinstance(eos, list):
            # Some chat models list several stop tokens; the first is the model's own end of sequence.
            eos = eos[0] if eos else None
        copied = {f.name for f in fields(cls)} - {"architecture", "rope_theta", "eos_token_id"}
        return cls(architecture=architectures[0], eos_token_id=eos,
                   rope_theta=rope.get("rope_theta", d.get("rope_theta", cls.rope_theta)),
                   **{k: d[k] for k in copied if k in d})

    def save(self, directory: str | Path) -> None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> ModelConfig:
        return cls.from_hf_dict(json.loads((Path(directory) / "config.json").read_text()))
