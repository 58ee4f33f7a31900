"""An LLM request's prompt token ids, computed in the router as the instance will compute them: what
cache-aware routing hashes (`block_manager.prefix_hashes`) to find the instance that caches the prompt's prefix."""
from __future__ import annotations

from grserve.model.tokenizer import chat_prompt
from grserve.server.openai_protocol import ChatMessage


def request_token_ids(path: str, body: dict, tokenizer=None) -> list[int] | None:
    """The prompt token ids an instance computes for an OpenAI request `body` to `path`, or None when the
    router cannot know them: text without a `tokenizer`, or a body the instance will refuse anyway.

    The same calls as the instance's routes (grserve/server/openai_api.py): `tokenizer.encode` of a text
    prompt, token ids as given, and the chat template over the messages as their request model dumps them.
    A request of several prompts goes to one instance: its first prompt stands for them all."""
    try:
        return _token_ids(path, body, tokenizer)
    except Exception:  # a template or tokenizer that fails here costs the request its routing hint, nothing more
        return None


def _token_ids(path: str, body: dict, tokenizer) -> list[int] | None:
    if path == "/v1/chat/completions":
        if tokenizer is None or not isinstance(body.get("messages"), list):
            return None
        messages = [ChatMessage.model_validate(m).model_dump(exclude_none=True) for m in body["messages"]]
        return chat_prompt(tokenizer, messages)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tokenizer.encode(prompt) if tokenizer is not None else None
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return list(prompt)
    return None
