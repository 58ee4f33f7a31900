"""grserve's forward against independent oracles: transformers on the same files, and itself run unbatched."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

from grserve.model import ModelConfig, Transformer, load_model, save_model

ARCHITECTURES = ["LlamaForCausalLM", "Qwen3ForCausalLM"]


def tiny_config(architecture: str, tied: bool = False) -> ModelConfig:
    # Qwen3 gets an explicit head_dim unequal to hidden/heads, as real Qwen3 models have; a non-default RoPE
    # base shows whether the base reaches transformers through config.json.
    return ModelConfig(
        architecture=architecture, vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16 if architecture == "Qwen3ForCausalLM" else None,
        rope_theta=1000.0, tie_word_embeddings=tied, eos_token_id=2,
    )


def tiny_model(config: ModelConfig, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                # Norm weights start at one; perturbed, a skipped or misplaced norm shows in the logits.
                p.normal_(1.0, 0.3)
    return model.eval()


def random_ids(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


def hf_model(directory) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_logits_match_transformers(architecture, tied, tmp_path):
    save_model(tiny_model(tiny_config(architecture, tied)), tmp_path)
    ids = random_ids((2, 9))
    theirs = hf_model(tmp_path)
    ours = load_model(tmp_path)
    assert theirs.dtype == torch.float32
    assert theirs.config.tie_word_embeddings == tied
    with torch.no_grad():
        expected = theirs(ids).logits
        logits, cache = ours(ids, torch.arange(9).expand(2, -1))
    assert logits.dtype == torch.float32 and logits.shape == (2, 9, 64)
    assert len(cache) == 2 and cache[0][0].shape == (2, 2, 9, ours.config.head_dim)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_loads_sharded_checkpoint_saved_by_transformers(tmp_path):
    save_model(tiny_model(tiny_config("Qwen3ForCausalLM", tied=True)), tmp_path / "ours")
    theirs = hf_model(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists()

    ours = load_model(tmp_path / "hf")
    assert ours.config == tiny_config("Qwen3ForCausalLM", tied=True)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    ids = random_ids((1, 6))
    with torch.no_grad():
        logits, _ = ours(ids, torch.arange(6)[None])
        torch.testing.assert_close(logits, theirs(ids).logits, atol=1e-4, rtol=1e-4)


def test_load_in_bfloat16_keeps_float32_logits(tmp_path):
    model = tiny_model(tiny_config("Qwen3ForCausalLM"))
    save_model(model, tmp_path)
    half = load_model(tmp_path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    ids = random_ids((1, 5))
    with torch.no_grad():
        logits, _ = half(ids, torch.arange(5)[None])
        expected, _ = model(ids, torch.arange(5)[None])
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_incremental_decoding_matches_full_forward(architecture):
    model = tiny_model(tiny_config(architecture))
    ids = random_ids((2, 10))
    positions = torch.arange(10).expand(2, -1)
    with torch.no_grad():
        full, _ = model(ids, positions)
        # A prefill, a chunk of three with a past (causal inside the chunk), then one token at a time.
        pieces, past = [], None
        for start, end in [(0, 4), (4, 7), (7, 8), (8, 9), (9, 10)]:
            logits, past = model(ids[:, start:end], positions[:, start:end], past=past)
            pieces.append(logits)
    assert past[0][0].shape == (2, 2, 10, model.config.head_dim)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_left_padded_batch_matches_single_sequences(architecture):
    model = tiny_model(tiny_config(architecture))
    sequences = [random_ids((6,), seed=2), random_ids((3,), seed=3)]
    next_tokens = random_ids((2, 1), seed=4)
    T = 6
    pads = torch.tensor([T - len(s) for s in sequences])
    ids = torch.stack([torch.cat((torch.zeros(T - len(s), dtype=torch.long), s)) for s in sequences])
    positions = (torch.arange(T) - pads[:, None]).clamp(min=0)
    real = torch.arange(T) >= pads[:, None]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    with torch.no_grad():
        prefill, cache = model(ids, positions, causal & real[:, None, None, :])
        # One decode step: each sequence continues at its own length; the padded keys stay masked.
        step_mask = torch.cat((real, torch.ones(2, 1, dtype=torch.bool)), dim=1)[:, None, None, :]
        step, _ = model(next_tokens, (T - pads)[:, None], step_mask, cache)
        assert torch.isfinite(prefill).all() and torch.isfinite(step).all()
        for b, seq in enumerate(sequences):
            alone = torch.cat((seq, next_tokens[b]))[None]
            expected, _ = model(alone, torch.arange(alone.shape[1])[None])
            torch.testing.assert_close(prefill[b, pads[b]:], expected[0, :-1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(step[b, 0], expected[0, -1], atol=1e-5, rtol=1e-5)


def test_load_names_missing_and_unexpected_tensors(tmp_path):
    save_model(tiny_model(tiny_config("LlamaForCausalLM")), tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing tensors \['model\.layers\.1\.mlp\.up_proj\.weight'\]"):
        load_model(tmp_path)

    tensors["model.layers.1.mlp.up_proj.weight"] = torch.zeros(48, 32)
    tensors["model.layers.2.mlp.up_proj.weight"] = torch.zeros(48, 32)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"unexpected tensors \['model\.layers\.2\.mlp\.up_proj\.weight'\]"):
        load_model(tmp_path)


def test_config_reads_what_transformers_writes(tmp_path):
    config = tiny_config("LlamaForCausalLM", tied=True)
    config.save(tmp_path)
    written_by_hf = AutoConfig.from_pretrained(tmp_path).to_dict()
    assert written_by_hf["rope_parameters"]["rope_theta"] == 1000.0
    assert ModelConfig.from_hf_dict(written_by_hf) == config
    # transformers 4 kept the RoPE base at the top level and listed several stop tokens in some models.
    v4 = {k: v for k, v in config.to_hf_dict().items() if k != "rope_parameters"}
    v4.update(rope_theta=500000.0, rope_scaling=None, eos_token_id=[2, 5], initializer_range=0.02)
    assert ModelConfig.from_hf_dict(v4).rope_theta == 500000.0
    assert ModelConfig.from_hf_dict(v4).eos_token_id == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [({"num_key_value_heads": 3}, "num_key_value_heads"), ({"architecture": "GPT2LMHeadModel"}, "architecture"),
     ({"hidden_size": 30}, "head_dim"), ({"eos_token_id": 64}, "eos_token_id")],
)
def test_config_rejects_invalid_fields(change, field):
    fields = {**tiny_config("LlamaForCausalLM").__dict__, "head_dim": None, **change}
    with pytest.raises(ValueError, match=field):
        ModelConfig(**fields)


def test_config_rejects_unsupported_rope_scaling():
    d = tiny_config("LlamaForCausalLM").to_hf_dict()
    d["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}
    with pytest.raises(ValueError, match="rope_type"):
        ModelConfig.from_hf_dict(d)


class ConcatBackend:
    """The model's own (k, v) cache path behind the AttentionBackend interface, recording the layers it serves."""

    def __init__(self, past):
        self.kv, self.layers = list(past), []

    def attend(self, layer, q, k, v):
        self.layers.append(layer)
        k, v = torch.cat((self.kv[layer][0], k), dim=2), torch.cat((self.kv[layer][1], v), dim=2)
        self.kv[layer] = (k, v)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_attention_backend_as_past_matches_kv_cache(architecture):
    model = tiny_model(tiny_config(architecture))
    ids, step = random_ids((2, 6)), random_ids((2, 1), seed=5)
    with torch.no_grad():
        _, cache = model(ids, torch.arange(6).expand(2, -1))
        expected, expected_cache = model(step, torch.full((2, 1), 6), past=cache)
        backend = ConcatBackend(cache)
        logits, returned = model(step, torch.full((2, 1), 6), past=backend)
        with pytest.raises(ValueError, match="mask"):
            model(step, torch.full((2, 1), 7), torch.ones(2, 1, 1, 8, dtype=torch.bool), past=backend)
    assert returned is backend and backend.layers == [0, 1]
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=1e-6)
    for (k, v), (k_ref, v_ref) in zip(backend.kv, expected_cache):
        torch.testing.assert_close(k, k_ref)
        torch.testing.assert_close(v, v_ref)


def test_dropout_is_off_in_eval_mode_so_logits_match_transformers(tmp_path):
    # Serving runs the model in eval mode: a model built with dropout answers exactly as transformers does.
    config = tiny_config("LlamaForCausalLM")
    save_model(tiny_model(config), tmp_path)
    model = Transformer(config, dropout=0.5)
    model.load_state_dict(load_model(tmp_path).state_dict())
    model.eval()
    ids = random_ids((2, 9))
    with torch.no_grad():
        logits, _ = model(ids, torch.arange(9).expand(2, -1))
        torch.testing.assert_close(logits, hf_model(tmp_path)(ids).logits, atol=1e-4, rtol=1e-4)


def test_dropout_only_perturbs_training_forwards():
    config = tiny_config("Qwen3ForCausalLM")
    model = Transformer(config, dropout=0.3)
    model.load_state_dict(tiny_model(config).state_dict())
    ids, positions = random_ids((2, 7)), torch.arange(7).expand(2, -1)

    def forward(train: bool, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        with torch.no_grad():
            return model.train(train)(ids, positions)[0]

    assert torch.equal(forward(True, 0), forward(True, 0))  # the dropout masks come from torch's seed
    assert not torch.allclose(forward(True, 0), forward(True, 1), atol=1e-3)
    assert not torch.allclose(forward(True, 0), forward(False, 0), atol=1e-3)
    # A model without dropout computes the same in either mode: training it is unchanged.
    plain = tiny_model(config)
    with torch.no_grad():
        torch.testing.assert_close(plain.train()(ids, positions)[0], forward(False, 0), atol=1e-6, rtol=1e-6)
