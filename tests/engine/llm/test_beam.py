"""Text beam search against transformers' beam search (fixed length: EOS masked) on a tiny model."""
import pytest
import torch
from transformers import AutoModelForCausalLM

from grserve.engine.llm.beam import beam_search
from grserve.model.loader import load_model


@pytest.mark.parametrize("width,n,length", [(4, 2, 6), (8, 8, 5), (3, 1, 1)])
def test_equals_transformers_beam_search(llm_dir, width, n, length):
    prompt = [5, 17, 42, 99, 3, 250, 7]
    hf = AutoModelForCausalLM.from_pretrained(str(llm_dir), dtype=torch.float32).eval()
    out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                      num_beams=width, num_return_sequences=n, max_new_tokens=length, min_new_tokens=length,
                      do_sample=False, early_stopping=True, length_penalty=1.0, pad_token_id=0,
                      output_scores=True, return_dict_in_generate=True)
    expected = out.sequences[:, len(prompt):].tolist()
    got = beam_search(load_model(llm_dir), prompt, width, n, length, eos_token_id=2, ignore_eos=True)
    assert [tokens for tokens, _, _ in got] == expected
    assert [s for _, s, _ in got] == pytest.approx(out.sequences_scores.tolist(), abs=1e-4)
    assert all(reason == "length" for _, _, reason in got)


def test_engine_use_beam_search_returns_the_beams(llm_dir):
    from grserve.engine.llm.engine import LLMEngine
    from grserve.sampling.params import SamplingParams
    prompt = [5, 17, 42, 99]
    expected = beam_search(load_model(llm_dir), prompt, 4, 2, 5, eos_token_id=2, ignore_eos=True)
    engine = LLMEngine(llm_dir)
    try:
        out = engine.generate_sync(prompt, SamplingParams(n=2, best_of=4, use_beam_search=True, temperature=0,
                                                          max_tokens=5, ignore_eos=True))
        assert [tokens for tokens, _, _ in out] == [tokens for tokens, _, _ in expected]
        assert [reason for _, _, reason in out] == ["length", "length"]
    finally:
        engine.shutdown()
