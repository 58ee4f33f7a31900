"""What `--model` names (DIR or NAME=DIR, GR or LLM by its files), the config's models, and where each GR model
keeps its change log."""
from __future__ import annotations

import pytest

from grserve.server.config import ServerConfig
from grserve.server.model_spec import DEFAULT_NAME, ModelSpec


def test_dir_or_name_and_dir(tiny_model_dir, llm_dir):
    assert ModelSpec.parse(tiny_model_dir) == ModelSpec(tiny_model_dir.rstrip("/").split("/")[-1], tiny_model_dir, "gr")
    assert ModelSpec.parse(f"shop={tiny_model_dir}") == ModelSpec("shop", tiny_model_dir, "gr")
    assert ModelSpec.parse(f"chat={llm_dir}").kind == "llm"  # a config.json without gr_config.json
    assert ModelSpec.parse("/srv/a=b/m").name == "m"  # an '=' inside a path names no model
    for bad in ("bad name=/x", "-x=/x", "a="):
        with pytest.raises(ValueError, match="^model: "):
            ModelSpec.parse(bad)


def test_a_shipped_models_name(tmp_path, monkeypatch):
    from grserve.bundle import EMBEDDED_MODELS_DIR
    monkeypatch.chdir(tmp_path)  # no ./beauty here: the name is the package's model
    assert ModelSpec.parse("beauty") == ModelSpec("beauty", str(EMBEDDED_MODELS_DIR / "beauty"), "gr")
    assert ModelSpec.parse("shop=beauty") == ModelSpec("shop", str(EMBEDDED_MODELS_DIR / "beauty"), "gr")


def test_the_configs_models_in_order(tiny_model_dir, llm_dir):
    c = ServerConfig.of(model=[f"a={tiny_model_dir}", f"chat={llm_dir}", f"b={tiny_model_dir}"])
    assert [(m.name, m.kind) for m in c.models] == [("a", "gr"), ("chat", "llm"), ("b", "gr")]
    assert [m.name for m in c.gr_models] == ["a", "b"]
    assert [m.name for m in ServerConfig.of().models] == [DEFAULT_NAME]  # the embedded model
    assert [(m.name, m.kind) for m in ServerConfig.of(llm_model=str(llm_dir)).models] == [
        (DEFAULT_NAME, "gr"), (llm_dir.name, "llm")]
    assert [m.kind for m in ServerConfig.of(model=str(llm_dir)).models] == ["llm"]  # an LLM alone, as before


def test_configs_that_cannot_serve(llm_dir):
    with pytest.raises(ValueError, match="two models named 'a'"):
        ServerConfig.of(model=["a=/x", "a=/y"])
    with pytest.raises(ValueError, match=r"one LLM per server .*\['chat', 'other'\]"):
        ServerConfig.of(model=[f"chat={llm_dir}"], llm_model=f"other={llm_dir}")
    with pytest.raises(ValueError, match="state_dir: 2 GR models cannot share one change log"):
        ServerConfig.of(model=["a=/x", "b=/y"], state_dir="/var/lib/grserve")


def test_each_gr_model_keeps_its_change_log(tmp_path):
    several = ServerConfig.of(model=["a=/x", "b=/y"], state_dir=str(tmp_path / "{model}"))
    assert several.state_dir_of("b") == str(tmp_path / "b")
    one = ServerConfig.of(model=["a=/x"], state_dir=str(tmp_path))
    assert one.state_dir_of("a") == str(tmp_path) and ServerConfig.of().state_dir_of("a") is None
    with pytest.raises(ValueError, match=r"state_dir: .* is the change log of a: start the server with \{model\}"):
        one.state_dir_of("b")  # a model loaded later needs a log of its own
