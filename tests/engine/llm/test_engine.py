"""The LLM engine against transformers `generate` (greedy, token for token) on tiny random models, with
chunked prefill and prefix caching on and off; prefix-cache counters; preemption under a small cache;
stop conditions, n > 1 and seeds; a thread that dies fails the engine loudly."""
from __future__ import annotations

import threading
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from grserve.engine.llm.config import LLMEngineConfig
from grserve.engine.failure import EngineFailed
from grserve.engine.llm.engine import LLMEngine
from grserve.model.compiled import is_compiled
from grserve.sampling.params import SamplingParams

PROMPTS = [[5, 17, 42, 99, 3, 250, 7], [11] * 3, list(range(20, 70)), [300, 301, 302, 9, 8, 7, 6, 5, 4, 3, 44, 45, 46],
           [1, 2]]


def hf_greedy(model_dir, prompts, max_new):
    hf = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    out = []
    for p in prompts:
        ids = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                          max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False, pad_token_id=0)
        out.append(ids[0, len(p):].tolist())
    return out


def run_all(engine, prompts, params):
    reqs = [engine.add_request(p, params) for p in prompts]  # all at once: one mixed batch
    results = []
    for r in reqs:
        tokens = []
        done = 0
        while done < len(r.seqs):
            d = r.outputs.get(timeout=120)
            assert not isinstance(d, Exception), d
            tokens += d.token_ids
            done += d.finish_reason is not None
        results.append(tokens)
    return results


@pytest.mark.parametrize("chunked,prefix,budget,spec,overlap", [
    (True, True, 16, 0, False), (False, True, 512, 0, False), (True, False, 7, 0, False),
    (False, False, 512, 0, False), (True, True, 16, 3, False), (False, False, 512, 4, False),
    (True, True, 16, 0, True), (False, False, 512, 0, True), (True, False, 7, 0, True)])
@pytest.mark.parametrize("model_fixture", ["llm_dir", "qwen_dir"])
def test_greedy_equals_transformers(request, model_fixture, chunked, prefix, budget, spec, overlap):
    model_dir = request.getfixturevalue(model_fixture)
    expected = hf_greedy(model_dir, PROMPTS, 12)
    engine = LLMEngine(model_dir, LLMEngineConfig(block_size=4, chunked_prefill=chunked, prefix_caching=prefix,
                                                  max_num_batched_tokens=budget, speculative_tokens=spec,
                                                  overlap=overlap))
    try:
        params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
        assert run_all(engine, PROMPTS, params) == expected
        assert run_all(engine, PROMPTS, params) == expected  # again: now with cached prefixes when on
    finally:
        engine.shutdown()


@pytest.mark.parametrize("model_fixture", ["llm_dir", "qwen_dir"])
def test_compiled_greedy_equals_transformers(request, model_fixture):
    """Compiled layers (prefill chunks, decode rows, both in one step) change no token."""
    model_dir = request.getfixturevalue(model_fixture)
    engine = LLMEngine(model_dir, LLMEngineConfig(block_size=4, max_num_batched_tokens=16, compile=True))
    try:
        assert is_compiled(engine.model)
        params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
        assert run_all(engine, PROMPTS, params) == hf_greedy(model_dir, PROMPTS, 12)
    finally:
        engine.shutdown()


def test_prompt_lookup_speculation_accepts_drafts_and_changes_nothing(llm_dir):
    """A prompt that repeats itself gives n-gram drafts; greedy output is the same as without them."""
    prompt = [40, 41, 42, 43, 44, 45] * 6
    expected = hf_greedy(llm_dir, [prompt], 30)[0]
    engine = LLMEngine(llm_dir, LLMEngineConfig(block_size=4, speculative_tokens=4))
    try:
        ((tokens, _, _),) = engine.generate_sync(prompt, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))
        assert tokens == expected
        assert engine.num_draft_tokens > 0  # drafts were proposed and verified
        assert engine.num_accepted_tokens <= engine.num_draft_tokens
    finally:
        engine.shutdown()


@pytest.mark.parametrize("same_model", [True, False])
def test_draft_model_speculation_is_greedy_exact(llm_dir, tmp_path, same_model):
    """With the target itself as the draft every token is accepted; with an unrelated random model few
    are. Either way the output is transformers' greedy output."""
    from tests.conftest import make_llm_dir
    draft = llm_dir if same_model else make_llm_dir(tmp_path / "draft", seed=5, layers=1)
    prompts = [[5, 17, 42, 99, 3], list(range(20, 40))]
    expected = hf_greedy(llm_dir, prompts, 16)
    engine = LLMEngine(llm_dir, LLMEngineConfig(block_size=4, speculative_tokens=3, draft_model=str(draft)))
    try:
        assert run_all(engine, prompts, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)) == expected
        assert engine.num_draft_tokens > 0
        if same_model:
            assert engine.num_accepted_tokens == engine.num_draft_tokens
    finally:
        engine.shutdown()


def test_shared_prefix_computes_only_the_remainder(llm_dir):
    engine = LLMEngine(llm_dir, LLMEngineConfig(block_size=16, max_num_batched_tokens=256))
    prefix = [(7 * i) % 390 + 5 for i in range(1000)]
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    try:
        first = engine.generate_sync(prefix + [11, 12, 13], params)
        before = engine.num_computed_tokens
        second = engine.generate_sync(prefix + [21, 22], params)
        computed = engine.num_computed_tokens - before
        # 1,000 shared tokens = 62 full blocks of 16 (992 tokens) come from the cache
        assert engine.blocks.hits >= 62
        assert computed == (1002 - 992) + 3  # the remainder of the prompt, then 3 decode steps
        assert first[0][0] and second[0][0]
    finally:
        engine.shutdown()


@pytest.mark.parametrize("overlap", [False, True])
def test_small_cache_preempts_and_stays_within_budget(llm_dir, overlap):
    """With overlap, sequences are also preempted while their last token is still being sampled."""
    # 40 blocks of 4 tokens: 6 requests of 30+12 tokens cannot all hold their KV at once
    block_bytes = 2 * 2 * 4 * 2 * 16 * 4
    engine = LLMEngine(llm_dir, LLMEngineConfig(block_size=4, kv_cache_bytes=40 * block_bytes,
                                                max_num_batched_tokens=64, overlap=overlap))
    prompts = [[(13 * i + 7 * j) % 390 + 5 for j in range(30)] for i in range(6)]
    try:
        params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
        assert engine.blocks.num_blocks == 40
        got = run_all(engine, prompts, params)
        assert got == hf_greedy(llm_dir, prompts, 12)
        assert engine.blocks.blocks_in_use == 0
    finally:
        engine.shutdown()


@pytest.mark.parametrize("overlap", [False, True])
def test_stop_strings_tokens_and_lengths(llm_dir, overlap):
    """With overlap the step after a stop has already been scheduled: its row is wasted, never emitted."""
    engine = LLMEngine(llm_dir, LLMEngineConfig(overlap=overlap))
    try:
        free = engine.generate_sync([5, 6, 7], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))
        tokens, text, reason = free[0]
        assert reason == "length" and len(tokens) == 20
        stop_text = text[3:6]
        if stop_text:
            (t2, text2, reason2), = engine.generate_sync([5, 6, 7], SamplingParams(
                temperature=0, max_tokens=20, ignore_eos=True, stop=[stop_text]))
            assert reason2 == "stop" and text2 == text[:text.find(stop_text)]
        (t3, _, reason3), = engine.generate_sync([5, 6, 7], SamplingParams(
            temperature=0, max_tokens=20, ignore_eos=True, stop_token_ids=[tokens[4]]))
        assert reason3 == "stop" and t3 == tokens[:tokens.index(tokens[4])]
        assert engine.blocks.blocks_in_use == 0
    finally:
        engine.shutdown()


def test_n_samples_and_seeds(llm_dir):
    engine = LLMEngine(llm_dir)
    try:
        params = SamplingParams(n=3, temperature=1.0, max_tokens=8, seed=123, ignore_eos=True)
        a = engine.generate_sync([5, 6, 7, 8], params)
        b = engine.generate_sync([5, 6, 7, 8], params)
        assert len(a) == 3 and [x[0] for x in a] == [x[0] for x in b]  # seeded: reproducible
        assert len({tuple(x[0]) for x in a}) > 1  # three different continuations
    finally:
        engine.shutdown()


def test_overlap_samples_as_without_it(llm_dir):
    """Seeded sampling with penalties reads each sequence's history, which the step before completes: with
    overlap the tokens are the same, draw for draw."""
    params = SamplingParams(n=2, temperature=0.8, top_p=0.9, max_tokens=10, seed=7, ignore_eos=True,
                            repetition_penalty=1.3, frequency_penalty=0.5)
    outputs = []
    for overlap in (False, True):
        engine = LLMEngine(llm_dir, LLMEngineConfig(overlap=overlap))
        try:
            outputs.append([run_all(engine, PROMPTS, params)])
        finally:
            engine.shutdown()
    assert outputs[0] == outputs[1]


def test_overlap_prepares_the_next_step_while_one_computes(llm_dir, monkeypatch):
    """Each forward waits (up to 10 s, never reached when overlapping) until the host has prepared the step
    after it: with overlap it always has, so every step but the last one saw its successor ready."""
    from grserve.engine.llm.model_runner import LLMModelRunner
    prepared, seen = [], []
    real_prepare, real_execute = LLMModelRunner.prepare, LLMModelRunner.execute

    def prepare(self, seqs, num_tokens, previous):
        step = real_prepare(self, seqs, num_tokens, previous)
        prepared.append(step)
        return step

    def execute(self, step, previous_sampled):
        index = next(i for i, s in enumerate(prepared) if s is step)
        deadline = time.monotonic() + 10
        while len(prepared) <= index + 1 and time.monotonic() < deadline and index < 11:
            time.sleep(0.001)
        seen.append(len(prepared) > index + 1)
        return real_execute(self, step, previous_sampled)

    monkeypatch.setattr(LLMModelRunner, "prepare", prepare)
    monkeypatch.setattr(LLMModelRunner, "execute", execute)
    engine = LLMEngine(llm_dir, LLMEngineConfig(overlap=True))
    try:
        (tokens, _, _), = engine.generate_sync([5, 6, 7], SamplingParams(temperature=0, max_tokens=12,
                                                                        ignore_eos=True))
    finally:
        engine.shutdown()
    assert tokens == hf_greedy(llm_dir, [[5, 6, 7]], 12)[0]
    # 12 steps: the prefill and 11 decodes (the 12th token's step is never scheduled: it would be the last)
    assert len(seen) == 12 and all(seen[:11])


def test_overlap_and_speculation_are_exclusive(llm_dir):
    with pytest.raises(ValueError, match="^overlap"):
        LLMEngineConfig(overlap=True, speculative_tokens=2)
    assert LLMEngineConfig(speculative_tokens=2, device="cuda").overlap is False


def test_bad_requests_name_the_field(llm_dir):
    engine = LLMEngine(llm_dir, LLMEngineConfig(max_model_len=64))
    try:
        with pytest.raises(ValueError, match="^prompt"):
            engine.add_request([], SamplingParams())
        with pytest.raises(ValueError, match="^prompt"):
            engine.add_request([10 ** 6], SamplingParams())
        with pytest.raises(ValueError, match="^max_tokens"):
            engine.add_request([5] * 60, SamplingParams(max_tokens=10))
    finally:
        engine.shutdown()


@pytest.mark.parametrize("overlap", [False, True])
def test_kv_from_a_prefill_engine_leaves_only_the_remainder(llm_dir, overlap):
    """Prefill/decode disaggregation within one process: the prefill engine runs the prompt and exports its full
    blocks; the decode engine adopts them (through the wire format), computes only the partial last block and
    the decode tokens, and its greedy output is transformers'."""
    from grserve.kv.llm.transfer import KVBlocks
    prompt = [(11 * i) % 390 + 5 for i in range(203)]  # 12 full blocks of 16 + 11 tokens
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    prefill, decode = LLMEngine(llm_dir), LLMEngine(llm_dir, LLMEngineConfig(overlap=overlap))
    try:
        prefill.generate_sync(prompt, SamplingParams(temperature=0, max_tokens=1))
        blocks = KVBlocks.from_bytes(prefill.export_prefix(prompt).to_bytes())
        assert blocks.num_blocks == 12
        assert decode.import_prefix(blocks).result(timeout=60) == 12
        assert decode.import_prefix(blocks).result(timeout=60) == 0  # held already: nothing written
        (tokens, _, _), = decode.generate_sync(prompt, params)
        assert tokens == hf_greedy(llm_dir, [prompt], 8)[0]
        assert decode.num_computed_tokens == 11 + 7 and decode.num_imported_blocks == 12
        with pytest.raises(ValueError, match="^block_size"):
            decode.import_prefix(KVBlocks(8, blocks.token_ids, blocks.kv))
    finally:
        prefill.shutdown()
        decode.shutdown()


class Boom(BaseException):
    """Not an Exception: it passes the engine's per-step handlers, as a bug outside them would."""


def test_dead_step_thread_fails_every_request_and_import_and_refuses_new_ones(llm_dir, caplog):
    from grserve.kv.llm.transfer import KVBlocks
    engine = LLMEngine(llm_dir, LLMEngineConfig(block_size=4, overlap=False))
    entered, release = threading.Event(), threading.Event()

    def execute(step, sampled):
        entered.set()
        release.wait(30)
        raise Boom("kaput")

    engine.runner.execute = execute
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    try:
        running = engine.add_request([5, 6, 7], params)
        assert entered.wait(30)
        waiting = engine.add_request([8, 9], params)  # queued behind the step that is computing
        mc = engine.model.config
        empty = KVBlocks(4, [], torch.zeros(mc.num_hidden_layers, 2, 0, mc.num_key_value_heads, mc.head_dim))
        imported = engine.import_prefix(empty)  # adopted between steps: none comes
        release.set()
        for req in (running, waiting):
            error = req.outputs.get(timeout=30)
            assert isinstance(error, EngineFailed) and "llm-step died: Boom: kaput" in str(error)
        with pytest.raises(EngineFailed, match="Boom: kaput"):
            imported.result(timeout=30)
        assert engine.failure == "engine thread llm-step died: Boom: kaput"
        with pytest.raises(EngineFailed, match="Boom: kaput"):
            engine.add_request([5], params)
        (record,) = [r for r in caplog.records if r.levelname == "ERROR" and "Boom" in r.getMessage()]
        assert record.exc_info and record.exc_info[0] is Boom  # logged with its traceback
    finally:
        engine.shutdown()


def test_dead_compute_thread_with_overlap_stops_the_host_thread_too(llm_dir):
    engine = LLMEngine(llm_dir, LLMEngineConfig(block_size=4, overlap=True))

    def execute(step, sampled):
        raise Boom("compute bug")

    engine.runner.execute = execute
    try:
        with pytest.raises(EngineFailed, match="llm-compute died: Boom: compute bug"):
            engine.generate_sync([5, 6, 7], SamplingParams(temperature=0, max_tokens=4))
        for t in engine.threads:
            t.join(30)
            assert not t.is_alive()
    finally:
        engine.shutdown()


def test_runner_that_cannot_be_built_fails_the_constructor_not_hangs_it(llm_dir, monkeypatch):
    import grserve.engine.llm.engine as llm_engine

    def runner(*args):
        raise Boom("no memory for the cache")

    monkeypatch.setattr(llm_engine, "LLMModelRunner", runner)
    outcome = []

    def build():
        try:
            LLMEngine(llm_dir)
        except EngineFailed as e:
            outcome.append(e)

    builder = threading.Thread(target=build, daemon=True)
    builder.start()
    builder.join(60)
    assert not builder.is_alive() and "llm-step died: Boom: no memory for the cache" in str(outcome[0])


def test_failed_step_fails_only_its_requests(llm_dir):
    engine = LLMEngine(llm_dir, LLMEngineConfig(block_size=4))
    real, calls = engine.runner.execute, []

    def execute(step, sampled):
        calls.append(step)
        if len(calls) == 1:
            raise RuntimeError("bad step")
        return real(step, sampled)

    engine.runner.execute = execute
    params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    try:
        with pytest.raises(RuntimeError, match="bad step"):
            engine.generate_sync([5, 6, 7], params)
        ((tokens, _, reason),) = engine.generate_sync([5, 6, 7], params)
        assert len(tokens) == 3 and reason == "length" and engine.failure is None
    finally:
        engine.shutdown()
