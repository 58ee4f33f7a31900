"""Prefill/decode disaggregation between instances, over HTTP.

The router pairs a prefill instance P with a decode instance D and sends the request to D with the header
`x-grserve-prefill: <P's address>`. D tokenizes the prompt as always, asks P for its KV (`POST
/v1/pd/prefill` with the token ids: P runs the prompt and answers with its full blocks, serialized with their
hashes), adopts them into its prefix cache, and then runs the request as usual: the prompt's full blocks are
prefix-cache hits, so D computes only the partial last block and the decode. D pulls rather than P pushes, so
nothing waits in D's cache for a request that may never come; if P fails, D computes the prompt itself and
the request still succeeds."""
from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from grserve.engine.llm.sequence import ONLINE, PRIORITY
from grserve.kv.llm.transfer import KVBlocks
from grserve.sampling.params import SamplingParams
from grserve.server.errors import ApiError
from grserve.server.protocol import PREFILL_HEADER

log = logging.getLogger("grserve")


class PrefillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt_token_ids: list[int] = Field(min_length=1)
    priority: Literal["online", "offline"] = "online"


async def prefill(engine, token_ids: list[int], priority: int = ONLINE) -> KVBlocks:
    """Runs the prompt (one greedy token, so every prompt token gets its KV) and exports its full blocks."""
    async for _ in engine.generate(token_ids, SamplingParams(temperature=0, max_tokens=1, ignore_eos=True),
                                   priority):
        pass
    return engine.export_prefix(token_ids)


async def pull_prefill(state, request: Request, prompts: list[list[int]], priority: str) -> None:
    """On a decode instance: when the router named a prefill instance, adopt the prompts' KV from it. Any
    failure only costs the transfer: the engine then computes the prompt itself."""
    address = request.headers.get(PREFILL_HEADER)
    if not address:
        return
    engine = state.llm
    client = state.http_client()
    for ids in prompts:
        if len(engine.blocks.cached_prefix(ids)) == len(ids) // engine.blocks.block_size:
            continue  # every full block is here already (or there is none): nothing to pull
        try:
            r = await client.post(address.rstrip("/") + "/v1/pd/prefill",
                                  json={"prompt_token_ids": ids, "priority": priority}, timeout=60)
            r.raise_for_status()
            blocks = await asyncio.to_thread(KVBlocks.from_bytes, r.content)
            await asyncio.wrap_future(engine.import_prefix(blocks))
        except Exception as e:
            state.metrics.pd_pull_failures.inc()
            log.warning("KV from prefill instance %s failed (%s: %s); computing the prompt here", address,
                        type(e).__name__, e)


def add_pd_routes(app: FastAPI, state, errors: dict) -> None:
    @app.post("/v1/pd/prefill", responses=errors)
    async def prefill_route(req: PrefillRequest):
        """Prefill instance: the KV of the prompt's full blocks, as a safetensors payload."""
        engine = state.llm_of().llm
        try:
            engine.check(req.prompt_token_ids, SamplingParams(max_tokens=1))
        except ValueError as e:
            raise ApiError(400, str(e), str(e).split(":")[0])
        blocks = await prefill(engine, req.prompt_token_ids, PRIORITY[req.priority])
        data = await asyncio.to_thread(blocks.to_bytes)
        return Response(data, media_type="application/octet-stream",
                        headers={"x-grserve-blocks": str(blocks.num_blocks)})
