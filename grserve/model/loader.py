"""Saving and loading a Transformer as a Hugging Face checkpoint: config.json plus safetensors, sharded or not.

Reads safetensors directly, so serving needs no transformers; names are checked strictly, because a
silently missing tensor would leave random weights in a model that still runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from grserve.model.config import ModelConfig
from grserve.model.transformer import Transformer

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TIED_HEAD = "lm_head.weight"


def save_model(model: Transformer, directory: str | Path) -> None:
    path = Path(directory)
    model.config.save(path)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        # HF leaves a tied head out of the file; safetensors also refuses two names for one storage.
        del tensors[TIED_HEAD]
    save_file(tensors, path / WEIGHTS, metadata={"format": "pt"})


def load_model(directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Transformer:
    path = Path(directory)
    config = ModelConfig.load(path)
    tensors = {}
    for file in _weight_files(path):
        with safe_open(file, framework="pt", device=str(device)) as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name).to(dtype)
    # Older Llama exports carry RoPE frequencies, which grserve recomputes; some exporters store a tied head.
    for name in [n for n in tensors if n.endswith("rotary_emb.inv_freq")]:
        del tensors[name]
    if config.tie_word_embeddings:
        tensors.pop(TIED_HEAD, None)

    # Built on the meta device: no memory is spent on initial weights that are replaced at once.
    with torch.device("meta"):
        model = Transformer(config)
    expected = set(model.state_dict()) - ({TIED_HEAD} if config.tie_word_embeddings else set())
    missing, unexpected = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"{path} does not hold a {config.architecture} with this config: "
                         f"missing tensors {missing}, unexpected tensors {unexpected}")
    # Names were checked above; strict=False only lets the tied head, absent from the file, pass.
    model.load_state_dict(tensors, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()


def stored_dtype(directory: str | Path) -> torch.dtype:
    """The dtype of the checkpoint's first floating-point tensor (what it was saved in)."""
    with safe_open(_weight_files(Path(directory))[0], framework="pt") as f:
        for name in f.keys():
            dtype = f.get_slice(name).get_dtype()
            if dtype in _SAFETENSORS_FLOATS:
                return _SAFETENSORS_FLOATS[dtype]
    return torch.float32


_SAFETENSORS_FLOATS = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def _weight_files(path: Path) -> list[Path]:
    # The same preference as HF: a single file first, then the shards an index names.
    if (path / WEIGHTS).exists():
        return [path / WEIGHTS]
    if (path / WEIGHTS_INDEX).exists():
        weight_map = json.loads((path / WEIGHTS_INDEX).read_text())["weight_map"]
        return [path / name for name in sorted(set(weight_map.values()))]
    raise FileNotFoundError(f"{path} holds neither {WEIGHTS} nor {WEIGHTS_INDEX}")
