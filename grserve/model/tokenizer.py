"""Tokenizers from a local Hugging Face model directory (`tokenizer.json`, `tokenizer_config.json` with
its chat template), and incremental detokenization for streaming.

transformers' `AutoTokenizer` reads the directory (never a hub: `local_files_only`); the model forward
itself never touches transformers."""
from __future__ import annotations

import os
from pathlib import Path


def load_tokenizer(directory: str | Path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer
    if not (Path(directory) / "tokenizer.json").exists() and not (Path(directory) / "tokenizer_config.json").exists():
        raise FileNotFoundError(f"{directory} has no tokenizer.json or tokenizer_config.json")
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def prompt_token_ids(tokenizer, prompt) -> list[list[int]]:
    """The token ids of an OpenAI completions `prompt`: a string, a list of strings, token ids, or lists of
    token ids. Raises ValueError for anything else. The instance's route and the router (which hashes the
    ids for cache-aware routing) both call this, so they agree."""
    if isinstance(prompt, str):
        return [tokenizer.encode(prompt)]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [list(prompt)]
    if prompt and all(isinstance(p, str) for p in prompt):
        return [tokenizer.encode(p) for p in prompt]
    if prompt and all(isinstance(p, list) for p in prompt):
        return [list(p) for p in prompt]
    raise ValueError("prompt: must be a string, a list of strings, token ids or lists of token ids")


def chat_prompt(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a chat, rendered with the model's own chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this model has no chat template: use /v1/completions")
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


class IncrementalDetokenizer:
    """Text deltas of a growing token list. Decoding the whole output each time and diffing is simple and
    right across merges; a trailing U+FFFD (half a multi-byte character) is held back until it completes."""

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.text = ""

    def delta(self, output_token_ids: list[int]) -> str:
        text = self.tokenizer.decode(output_token_ids, skip_special_tokens=self.skip)
        if text.endswith("\ufffd"):
            return ""
        new, self.text = text[len(self.text):], text
        return new
