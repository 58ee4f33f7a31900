"""KVBlocks on the wire: a round trip keeps KV and tokens; a payload whose hashes are not its tokens', or that is
not a payload at all, is refused with the field named."""
import json

import pytest
import torch
from safetensors.torch import save

from grserve.kv.llm.transfer import KVBlocks


def test_round_trip_keeps_kv_and_tokens():
    kv = torch.randn(2, 2, 8, 3, 4, dtype=torch.bfloat16)
    back = KVBlocks.from_bytes(KVBlocks(4, list(range(8)), kv).to_bytes())
    assert back.block_size == 4 and back.token_ids == list(range(8)) and back.num_blocks == 2
    assert torch.equal(back.kv, kv)


def test_hashes_that_are_not_the_tokens_are_refused():
    kv = torch.zeros(1, 2, 4, 1, 2)
    forged = save({"kv": kv}, metadata={"block_size": "4", "token_ids": json.dumps([1, 2, 3, 4]),
                                        "hashes": json.dumps(["12345"])})
    with pytest.raises(ValueError, match="^hashes"):
        KVBlocks.from_bytes(forged)


@pytest.mark.parametrize("data", [b"", b"not safetensors at all", save({"x": torch.zeros(1)})])
def test_garbage_is_refused(data):
    with pytest.raises(ValueError, match="^kv"):
        KVBlocks.from_bytes(data)
