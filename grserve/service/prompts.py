"""An LLM request's prompt token ids, computed in the router as the instance will compute them: what
cache-aware routing hashes (`block_manager.prefix_hashes`) to find the instance that caches the prompt's prefix."""
from __future__ import annotations

from grserve.model.tokenizer import chat_prompt, prompt_token_ids
from grserve.server.openai_protocol import ChatCompletionRequest


def request_token_ids(path: str, body: dict, tokenizer=None) -> list[int] | None:
    """The prompt token ids an instance computes for an OpenAI request `body` to `path`, or None when the
    router cannot know them: text without a `tokenizer`, or a body the instance will refuse anyway.

    The same functions as the instance's routes (grserve/server/openai_api.py): `prompt_token_ids`, and the
    chat template over the request model's messages. A request of several prompts goes to one instance: its
    first prompt stands for them all."""
    try:
        return _token_ids(path, body, tokenizer)
    except Exception:  # a template or tokenizer that fails here costs the request its routing hint, nothing more
        return None


def _token_ids(path: str, body: dict, tokenizer) -> list[int] | None:
    if path == "/v1/chat/completions":
        if tokenizer is None:
            return None
        return chat_prompt(tokenizer, ChatCompletionRequest.model_validate(body).template_messages())
    prompt = body.get("prompt")
    texts = isinstance(prompt, str) or (isinstance(prompt, list) and any(isinstance(p, str) for p in prompt))
    if texts and tokenizer is None:
        return None
    return prompt_token_ids(tokenizer, prompt)[0]
