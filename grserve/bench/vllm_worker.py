"""vLLM CPU beam search in a process of its own, for the benchmark's `VLLMBeamSearch` baseline.

It runs with the vLLM venv's python, where grserve is not installed: vllm and the standard library only.
Protocol, one JSON object per line: after loading the model it writes `{"ready": true}`; then for each request
`{"prompts": [[ids...], ...], "beam_width": W, "top_n": N}` read from stdin it writes
`{"results": [[[tokens, cum_logprob], ...], ...]}` (per prompt, best first, generated tokens only) or
`{"error": "..."}`; for `{"generate": {"prompts": [[ids...], ...], "max_tokens": N}}` (greedy text generation,
for `grserve bench llm`) it writes `{"outputs": [[ids...], ...], "seconds": s}`. End of stdin ends it.

Replies go to a private duplicate of stdout; fd 1 itself is pointed at stderr before vLLM is imported, so
that whatever vLLM and the engine process it spawns print cannot corrupt the protocol."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def generate(llm, request: dict) -> dict:
    import time

    from vllm import SamplingParams, TokensPrompt
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in request["prompts"]]
    params = SamplingParams(temperature=0.0, max_tokens=request["max_tokens"], ignore_eos=True)
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return {"outputs": [list(out.outputs[0].token_ids) for out in outputs], "seconds": time.perf_counter() - started}


def serve(llm, replies) -> None:
    from vllm import TokensPrompt
    from vllm.sampling_params import BeamSearchParams

    for line in sys.stdin:
        try:
            request = json.loads(line)
            if "generate" in request:
                replies.write(json.dumps(generate(llm, request["generate"])) + "\n")
                continue
            params = BeamSearchParams(beam_width=request["beam_width"], max_tokens=3, length_penalty=0.0,
                                      ignore_eos=True)
            prompts = [TokensPrompt(prompt_token_ids=ids) for ids in request["prompts"]]
            # All prompts in one call: vLLM then runs every beam of every prompt in each step's batch.
            outputs = llm.beam_search(prompts, params)
            results = [[[seq.tokens[len(ids):], seq.cum_logprob] for seq in out.sequences[:request["top_n"]]]
                       for ids, out in zip(request["prompts"], outputs)]
            reply = {"results": results}
        except Exception as error:  # a bad request fails that request, not the worker
            reply = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")


def cap_beam_logprobs(vocab_size: int) -> None:
    """Make beam search ask for at most `vocab_size` log-probs per step instead of 2W.

    vLLM 0.32 requests exactly 2W and its sampler's top-k fails ("selected index k out of range", killing
    the engine) when 2W exceeds the vocabulary, which a GR vocabulary is small enough for (ml-100k: 195
    tokens, so W >= 98). Top-2W of fewer than 2W tokens is all of them, so the cap changes no result."""
    from vllm.entrypoints.generate.beam_search import offline

    sampling_params = offline.SamplingParams
    offline.SamplingParams = lambda logprobs, **kwargs: sampling_params(
        logprobs=min(logprobs, vocab_size), **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--max-logprobs", type=int, required=True,
                        help="2 x the widest beam to serve: vLLM asks 2W log-probs per beam step")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()

    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)  # line-buffered: one flush per reply
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    from vllm import LLM

    config = json.loads((Path(args.model_dir) / "config.json").read_text())
    cap_beam_logprobs(config["vocab_size"])
    llm = LLM(model=args.model_dir, dtype=args.dtype, max_logprobs=args.max_logprobs, enable_prefix_caching=True,
              max_model_len=config["max_position_embeddings"])
    replies.write(json.dumps({"ready": True}) + "\n")
    serve(llm, replies)


if __name__ == "__main__":  # required: vLLM spawns its engine process, which re-imports this module
    main()
