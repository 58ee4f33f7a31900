"""The LLM engine keeps its linear weights input-major on the CPU: the values, names and shapes of the file, a
tied head left row-major, the same logits as the file's layout, and `save_model` still writes the file."""

import torch
from safetensors.torch import load_file

from grserve.model.loader import load_model, save_model
from grserve.model.weight_layout import lay_out_for_cpu
from tests.kv import tiny_model


def test_laid_out_weights_are_input_major_with_the_files_values(llm_dir, tmp_path):
    model = lay_out_for_cpu(load_model(llm_dir))
    stored = load_file(str(next(llm_dir.glob("*.safetensors"))))
    proj = model.model.layers[0].mlp.up_proj.weight
    assert not proj.is_contiguous() and proj.t().is_contiguous()
    for name, tensor in model.state_dict().items():
        if name in stored:
            assert torch.equal(tensor, stored[name]), name
    save_model(model, tmp_path)  # safetensors refuses non-contiguous tensors: save_model must copy them
    assert torch.equal(load_file(str(tmp_path / "model.safetensors"))[
        "model.layers.0.mlp.up_proj.weight"], stored["model.layers.0.mlp.up_proj.weight"])


def test_bf16_weights_stay_row_major():
    model = lay_out_for_cpu(tiny_model("LlamaForCausalLM").to(torch.bfloat16))
    assert model.model.layers[0].mlp.up_proj.weight.is_contiguous()


def test_tied_head_stays_row_major(qwen_dir):
    model = lay_out_for_cpu(load_model(qwen_dir))
    assert model.lm_head.weight is model.model.embed_tokens.weight and model.lm_head.weight.is_contiguous()


@torch.no_grad()
def test_logits_are_those_of_the_row_major_layout():
    reference = tiny_model("LlamaForCausalLM")
    laid_out = tiny_model("LlamaForCausalLM")
    lay_out_for_cpu(laid_out)
    ids = torch.randint(1, 64, (3, 16), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(16).expand(3, 16)
    torch.testing.assert_close(laid_out(ids, positions)[0], reference(ids, positions)[0])
