"""Cache-aware routing end to end: the router hashes each prompt (token ids, text, chat) in every instance's block
size and sends it where the prefix is cached. Over fake instances that report what a real BlockManager
registered, and over two real LLM instances that report their own caches."""
from __future__ import annotations

from contextlib import ExitStack

import httpx
import pytest

from grserve.kv.llm.block_manager import prefix_hashes
from grserve.model.tokenizer import chat_prompt, load_tokenizer
from grserve.service.router import create_router_app
from tests.server.conftest import running
from tests.service.conftest import instance_cpus, start_instance, wait_for
from tests.service.fake_instance import FakeInstance, answer_json, forwarded, reported_hashes

STORY = ("the quick brown fox jumps over the lazy dog and the cat sat on the mat while the dog slept, "
         "numbers 0 1 2 3 4 5 6 7 8 9 and symbols ! ? . , ")


@pytest.fixture(scope="module")
def tokenizer(llm_dir):
    return load_tokenizer(llm_dir)


def test_each_prompt_goes_where_its_prefix_is_cached(etcd, registry, prefix, tokenizer):
    ids = list(range(5, 85))
    text = STORY * 3
    chat = [{"role": "system", "content": STORY * 2}, {"role": "user", "content": "hello"}]
    # a (blocks of 16) served the token-id prompt and the chat, b (blocks of 8) the text; c caches nothing and,
    # highest in instance-id order, takes every tie: a request it gets found no cached prefix
    a = reported_hashes(16, ids, chat_prompt(tokenizer, chat))
    b = reported_hashes(8, tokenizer.encode(text))
    with ExitStack() as stack:
        fakes = {}
        for name, size, hashes in (("a", 16, a), ("b", 8, b), ("c", 16, [])):
            fakes[name] = FakeInstance(registry, name, answer_json({"served_by": name}), size, hashes)
            stack.callback(fakes[name].close)

        def served(url, path, body) -> str:
            r = httpx.post(url + path, json=body, timeout=10)
            assert r.status_code == 200
            return r.json()["served_by"]

        follow_up = chat + [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "more"}]
        with running(create_router_app(etcd.url, "cache-aware", poll_interval=0.2, prefix=prefix,
                                       tokenizer=tokenizer)) as url:
            assert served(url, "/v1/completions", {"prompt": ids[:70] + [999] * 20}) == "a"
            assert served(url, "/v1/completions", {"prompt": [ids[:50], [1, 2]]}) == "a"  # the first prompt counts
            assert served(url, "/v1/completions", {"prompt": text + "and a different ending"}) == "b"
            assert served(url, "/v1/chat/completions", {"messages": follow_up}) == "a"
            assert served(url, "/v1/completions", {"prompt": list(range(300, 400))}) == "c"  # nothing cached
        with running(create_router_app(etcd.url, "cache-aware", poll_interval=0.2, prefix=prefix)) as url:
            # no tokenizer: token ids still match, text and chats go by load
            assert served(url, "/v1/completions", {"prompt": ids[:70] + [999] * 20}) == "a"
            assert served(url, "/v1/completions", {"prompt": text + "and a different ending"}) == "c"
            assert served(url, "/v1/chat/completions", {"messages": follow_up}) == "c"


def test_real_instances_report_their_caches_and_get_their_prefixes(etcd, llm_dir, tokenizer):
    procs = [start_instance(llm_dir, etcd.url, cpus=cpus)[0] for cpus in instance_cpus(2)]
    try:
        # `grserve serve --register` writes under the default prefix, which other tests' GR instances share
        with running(create_router_app(etcd.url, "cache-aware", poll_interval=0.2, tokenizer=tokenizer)) as url:
            def instances():
                return {i["instance_id"]: i for i in httpx.get(url + "/v1/instances").json()["data"]
                        if i["kinds"] == ["llm"]}
            live = wait_for(lambda: len(instances()) == 2 and instances(), 120, "2 LLM instances registered")
            assert {i["block_size"] for i in live.values()} == {16}
            # cache-aware ties go to the highest instance id: warm the other one, straight, not through the router
            warm, cold = sorted(live)
            text, chat = STORY * 4, [{"role": "system", "content": STORY * 3}, {"role": "user", "content": "hi"}]
            for path, body in (("/v1/completions", {"prompt": text}), ("/v1/chat/completions", {"messages": chat})):
                r = httpx.post(live[warm]["address"] + path, json={**body, "max_tokens": 1}, timeout=60)
                assert r.status_code == 200
            # the engine's own cache holds the hashes the router computes for these prompts
            wanted = set(prefix_hashes(tokenizer.encode(text), 16) + prefix_hashes(chat_prompt(tokenizer, chat), 16))
            wait_for(lambda: wanted <= set(instances()[warm]["prefix_hashes"]), 10, "the warm cache to be reported")
            assert not instances()[cold]["prefix_hashes"]

            for path, body in (("/v1/completions", {"prompt": text + "and then"}),
                               ("/v1/chat/completions", {"messages": chat + [{"role": "assistant", "content": "ok"}]}),
                               ("/v1/completions", {"prompt": "a different story"})):
                assert httpx.post(url + path, json={**body, "max_tokens": 2}, timeout=60).status_code == 200
            assert forwarded(url) == {warm: 2, cold: 1}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
