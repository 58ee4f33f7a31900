"""OpenAI-compatible routes: /v1/completions and /v1/chat/completions over the LLMEngine, streaming
(server-sent events, with `stream_options.include_usage`) or not; and GR models driven through
/v1/completions with token-id prompts and `beam_width` (the best SIDs, as xLLM's rec backend). A request's
`model` names the served model that answers it (a name no model has: 404); each holds its model until answered,
a stream until its last event, so that unloading the model never cuts it."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from grserve.engine.gr.request import GRRequest
from grserve.engine.llm.sequence import PRIORITY
from grserve.errors import InvalidRequest
from grserve.model.tokenizer import chat_prompt, prompt_token_ids
from grserve.server.errors import ApiError
from grserve.server.openai_protocol import ChatCompletionRequest, CompletionRequest
from grserve.server.pd import pull_prefill
from grserve.server.served import ServedModel


def _params(req, max_tokens: int | None, logprobs: int | None):
    try:
        return req.sampling(max_tokens or 16, logprobs)
    except ValueError as e:
        param = str(e).split()[0]
        raise ApiError(400, str(e), param)


async def _held(release, stream):
    """`stream`, releasing its model once it ends (or the client leaves). A stream the server never starts keeps
    its model held: an unload then waits its timeout for it."""
    try:
        async for chunk in stream:
            yield chunk
    finally:
        release()


def _logprobs_block(engine, entries, chat: bool):
    def tok(t):
        return engine.tokenizer.decode([t])
    if chat:
        return {"content": [{"token": tok(t), "logprob": lp, "bytes": list(tok(t).encode()),
                             "top_logprobs": [{"token": tok(a), "logprob": b, "bytes": list(tok(a).encode())}
                                              for a, b in top]} for t, lp, top in entries]}
    return {"tokens": [tok(t) for t, _, _ in entries], "token_logprobs": [lp for _, lp, _ in entries],
            "top_logprobs": [{tok(a): b for a, b in top} for _, _, top in entries]}


TIMEOUT_MESSAGE = "timeout_ms: the deadline passed before the generation finished"


def _deadline(state, req) -> float | None:
    """The request's deadline on the event loop's clock, from `timeout_ms` (None: none)."""
    if req.timeout_ms is None:
        return None
    if req.timeout_ms > state.config.max_timeout_ms:
        raise ApiError(400, f"timeout_ms: {req.timeout_ms} exceeds {state.config.max_timeout_ms}", "timeout_ms")
    return asyncio.get_running_loop().time() + req.timeout_ms / 1000


async def _until(deltas, deadline: float | None):
    """`deltas`, raising TimeoutError once the event loop's clock passes `deadline` (None: never). Each wait is
    its own wait_for, never a timeout around a `yield`: the cancellation then lands in the engine's generator,
    whose cleanup aborts the request, rather than wherever the response's task happens to be."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            yield await asyncio.wait_for(anext(deltas), None if deadline is None else deadline - loop.time())
        except StopAsyncIteration:
            return


async def _collect(engine, ids, params, priority, rid, deadline: float | None):
    outs: dict[int, dict] = {}
    try:
        async with contextlib.aclosing(engine.generate(ids, params, priority, rid)) as deltas:
            async for d in _until(deltas, deadline):
                o = outs.setdefault(d.index, {"text": "", "tokens": [], "logprobs": [], "finish_reason": None})
                o["text"] += d.text
                o["tokens"] += d.token_ids
                o["logprobs"] += d.logprobs
                o["finish_reason"] = d.finish_reason or o["finish_reason"]
    except TimeoutError:
        raise ApiError(504, TIMEOUT_MESSAGE, "timeout_ms", kind="timeout_error") from None
    return [outs[i] for i in sorted(outs)]


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def _stream(engine, ids, params, priority, rid, base: dict, chat: bool, include_usage: bool,
                  deadline: float | None):
    completion_tokens, started = 0, set()
    try:
        async with contextlib.aclosing(engine.generate(ids, params, priority, rid)) as deltas:
            async for d in _until(deltas, deadline):
                completion_tokens += len(d.token_ids)
                if chat:
                    delta = {} if d.index in started else {"role": "assistant"}
                    started.add(d.index)
                    if d.text or not delta:
                        delta["content"] = d.text
                    choice = {"index": d.index, "delta": delta, "finish_reason": d.finish_reason, "logprobs":
                              _logprobs_block(engine, d.logprobs, True) if params.logprobs is not None else None}
                else:
                    choice = {"index": d.index, "text": d.text, "finish_reason": d.finish_reason, "logprobs":
                              _logprobs_block(engine, d.logprobs, False) if params.logprobs is not None else None}
                yield _sse({**base, "choices": [choice]})
        if include_usage:
            yield _sse({**base, "choices": [], "usage": {"prompt_tokens": len(ids),
                                                         "completion_tokens": completion_tokens,
                                                         "total_tokens": len(ids) + completion_tokens}})
    except TimeoutError:
        yield _sse({"error": {"message": TIMEOUT_MESSAGE, "type": "timeout_error", "param": "timeout_ms",
                              "code": 504}})
    except Exception as e:  # tokens may already be sent: the failure is an error event, then [DONE]
        yield _sse({"error": {"message": f"generation failed: {e}", "type": "internal_error", "param": None,
                              "code": 500}})
    yield "data: [DONE]\n\n"


async def _holding(model: ServedModel, respond) -> object:
    """`await respond()` with `model` held (served.py): a stream holds it until its last event."""
    release = model.hold()
    try:
        response = await respond()
    except BaseException:
        release()
        raise
    if isinstance(response, StreamingResponse):
        response.body_iterator = _held(release, response.body_iterator)
    else:
        release()
    return response


async def _completion(state, model: ServedModel, req: CompletionRequest, request: Request):
    engine = model.llm
    deadline = _deadline(state, req)
    try:
        prompts = prompt_token_ids(engine.tokenizer, req.prompt)
    except ValueError as e:
        raise ApiError(400, str(e), "prompt")
    params = _params(req, req.max_tokens, req.logprobs)
    priority = PRIORITY[req.priority]
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    base = {"id": rid, "object": "text_completion", "created": created, "model": model.name}
    try:
        for ids in prompts:
            engine.check(ids, params)
    except ValueError as e:
        raise ApiError(400, str(e), str(e).split(":")[0])
    await pull_prefill(state, request, prompts, req.priority)
    if req.stream:
        if len(prompts) != 1:
            raise ApiError(400, "prompt: streaming takes a single prompt", "prompt")
        include = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(_stream(engine, prompts[0], params, priority, rid, base, False, include, deadline),
                                 media_type="text/event-stream")
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for ids in prompts:
        for out in await _collect(engine, ids, params, priority, rid, deadline):
            text = (engine.tokenizer.decode(ids) if req.echo else "") + out["text"]
            choices.append({"index": len(choices), "text": text, "finish_reason": out["finish_reason"],
                            "logprobs": _logprobs_block(engine, out["logprobs"], False)
                            if req.logprobs is not None else None})
            completion_tokens += len(out["tokens"])
        prompt_tokens += len(ids)
    return {**base, "choices": choices, "usage": {"prompt_tokens": prompt_tokens,
                                                  "completion_tokens": completion_tokens,
                                                  "total_tokens": prompt_tokens + completion_tokens}}


async def _chat(state, model: ServedModel, req: ChatCompletionRequest, request: Request):
    engine = model.llm
    deadline = _deadline(state, req)
    try:
        ids = chat_prompt(engine.tokenizer, req.template_messages())
    except ValueError as e:
        raise ApiError(400, f"messages: {e}", "messages")
    params = _params(req, req.max_completion_tokens or req.max_tokens,
                     (req.top_logprobs or 0) if req.logprobs else None)
    try:
        engine.check(ids, params)
    except ValueError as e:
        raise ApiError(400, str(e), str(e).split(":")[0])
    await pull_prefill(state, request, [ids], req.priority)
    priority = PRIORITY[req.priority]
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if req.stream:
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model.name}
        include = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(_stream(engine, ids, params, priority, rid, base, True, include, deadline),
                                 media_type="text/event-stream")
    outs = await _collect(engine, ids, params, priority, rid, deadline)
    completion_tokens = sum(len(o["tokens"]) for o in outs)
    return {"id": rid, "object": "chat.completion", "created": created, "model": model.name,
            "choices": [{"index": i, "message": {"role": "assistant", "content": o["text"]},
                         "finish_reason": o["finish_reason"],
                         "logprobs": _logprobs_block(engine, o["logprobs"], True) if req.logprobs else None}
                        for i, o in enumerate(outs)],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": completion_tokens,
                      "total_tokens": len(ids) + completion_tokens}}


def add_openai_routes(app: FastAPI, state, errors: dict) -> None:
    @app.post("/v1/completions", responses=errors)
    async def completions(req: CompletionRequest, request: Request):
        """An LLM's completion, or with `beam_width` a GR model's best semantic IDs; `model` names which (default:
        the LLM, or the first GR model)."""
        if req.beam_width is not None:
            return await _gr_completion(state, req)
        model = state.llm_of(req.model)
        return await _holding(model, lambda: _completion(state, model, req, request))

    @app.post("/v1/chat/completions", responses=errors)
    async def chat_completions(req: ChatCompletionRequest, request: Request):
        model = state.llm_of(req.model)
        return await _holding(model, lambda: _chat(state, model, req, request))


async def _gr_completion(state, req: CompletionRequest) -> dict:
    """A GR model through the completions API: token-id prompt, beam_width, max_tokens = its SID's levels → the
    n best SIDs, each a choice with its tokens and score."""
    model = state.gr(req.model)
    rec = model.recommender
    if not (isinstance(req.prompt, list) and all(isinstance(t, int) for t in req.prompt)):
        raise ApiError(400, "prompt: a GR model takes a list of token ids", "prompt")
    levels = rec.bundle.vocab.levels
    if (req.max_tokens or levels) != levels:
        raise ApiError(400, f"max_tokens: a GR model generates exactly {levels} tokens (one semantic ID)",
                       "max_tokens")
    request = GRRequest(list(req.prompt), req.beam_width, min(req.n, req.beam_width), catalog=rec.catalog.current)
    try:
        rec.engine.validate(request)
        with model.use():
            result = await rec.engine.submit_async(request)
    except InvalidRequest as e:
        raise ApiError(400, str(e), e.param)
    vocab, sids = rec.bundle.vocab, {}
    for _, score, sid in result.items:
        sids.setdefault(tuple(sid), score)
    choices = [{"index": i, "text": " ".join(vocab.names()[vocab.offset(l) + c] for l, c in enumerate(sid)),
                "token_ids": [vocab.offset(l) + c for l, c in enumerate(sid)], "semantic_id": list(sid),
                "score": score, "finish_reason": "length", "logprobs": None}
               for i, (sid, score) in enumerate(sids.items())]
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model.name, "choices": choices,
            "usage": {"prompt_tokens": len(req.prompt), "completion_tokens": levels * len(choices),
                      "total_tokens": len(req.prompt) + levels * len(choices)}}
