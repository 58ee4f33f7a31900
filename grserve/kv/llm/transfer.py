"""KV blocks on the wire (prefill/decode disaggregation): the KV of a prompt's leading full blocks, with the
token ids they hold and their chained hashes, as one safetensors payload.

A decode instance checks the payload before adopting it: the hashes must be those of the token ids (a
prefill instance of another version, or a corrupted transfer, is refused), and block size, layers, heads and
dtype must be its own."""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from safetensors.torch import load, save

from grserve.kv.llm.block_manager import prefix_hashes


@dataclass
class KVBlocks:
    block_size: int
    token_ids: list[int]  # the tokens of the blocks: a multiple of block_size
    kv: torch.Tensor  # [num_layers, 2, len(token_ids), num_kv_heads, head_dim]

    @property
    def num_blocks(self) -> int:
        return len(self.token_ids) // self.block_size

    def to_bytes(self) -> bytes:
        metadata = {"block_size": str(self.block_size), "token_ids": json.dumps(self.token_ids),
                    "hashes": json.dumps([str(h) for h in prefix_hashes(self.token_ids, self.block_size)])}
        return save({"kv": self.kv.contiguous()}, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes) -> KVBlocks:
        """Raises ValueError ("field: reason") for a payload that is not KV blocks or whose hashes disagree."""
        try:
            kv = load(data)["kv"]
            header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])["__metadata__"]
            block_size, token_ids = int(header["block_size"]), json.loads(header["token_ids"])
            hashes = [int(h) for h in json.loads(header["hashes"])]
        except Exception as e:
            raise ValueError(f"kv: not a KV block payload ({type(e).__name__}: {e})") from e
        if block_size < 1 or len(token_ids) % block_size or kv.dim() != 5 or kv.shape[2] != len(token_ids):
            raise ValueError(f"kv: {len(token_ids)} token ids, block size {block_size} and KV of shape "
                             f"{list(kv.shape)} do not fit together")
        if hashes != prefix_hashes(token_ids, block_size):
            raise ValueError("hashes: the blocks' hashes are not those of their token ids")
        return cls(block_size, token_ids, kv)
