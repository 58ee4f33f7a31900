"""The router's prompt token ids against the tokenizer calls the instance's routes make. (That the hashes of
those ids are the names the engine's cache registers: tests/kv/llm/test_block_manager.py, and end to end against
real instances in test_router_cache_aware.py.)"""
from __future__ import annotations

import pytest

from grserve.model.tokenizer import chat_prompt, load_tokenizer
from grserve.service.prompts import request_token_ids


@pytest.fixture(scope="module")
def tokenizer(llm_dir):
    return load_tokenizer(llm_dir)


def test_request_token_ids_are_the_instances(tokenizer):
    text = "the quick brown fox jumps over the lazy dog"
    completions, chat = "/v1/completions", "/v1/chat/completions"
    assert request_token_ids(completions, {"prompt": text}, tokenizer) == tokenizer.encode(text)
    assert request_token_ids(completions, {"prompt": [text, "other"]}, tokenizer) == tokenizer.encode(text)
    assert request_token_ids(completions, {"prompt": [5, 6, 7]}) == [5, 6, 7]  # no tokenizer needed
    assert request_token_ids(completions, {"prompt": [[5, 6], [7]]}) == [5, 6]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text, "name": None}]
    assert request_token_ids(chat, {"messages": messages}, tokenizer) == chat_prompt(
        tokenizer, [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}])


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "text needs the tokenizer"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "so does a chat"}]}),
    ("/v1/completions", {"prompt": []}),
    ("/v1/completions", {"prompt": [1, "mixed"]}),
    ("/v1/completions", {}),
])
def test_unknowable_prompts_are_none(path, body):
    assert request_token_ids(path, body) is None


def test_a_chat_the_instance_refuses_is_none(tokenizer):
    bad = {"messages": [{"role": "robot", "content": "hi"}]}  # the instance's request model answers 400
    assert request_token_ids("/v1/chat/completions", bad, tokenizer) is None
