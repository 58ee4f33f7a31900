"""What `grserve serve --model` names: a model directory, GR or LLM, as `DIR` or `NAME=DIR`.

A model's name is what requests, metrics, the registry and the catalog history in etcd know it by: the one
given, else the directory's last part. Its kind comes from the directory: `gr_config.json` makes a GR model, a
Hugging Face `config.json` without it an LLM; anything else is taken for a GR model, whose loading then says
what is missing."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from grserve.bundle import SETTINGS_FILE, model_directory

GR, LLM = "gr", "llm"
Kind = Literal["gr", "llm"]
DEFAULT_NAME = "grserve-default-ml-100k"  # the embedded model's, served when no --model is given
# Names go into etcd keys, state directory paths, metric labels and router splits (`home=gr-a:90,gr-b:10`).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def model_name(path: str | None) -> str:
    return path.rstrip("/").split("/")[-1] if path else DEFAULT_NAME


def model_kind(directory: str | Path | None) -> Kind:
    if directory is None:
        return GR
    path = Path(directory)
    return LLM if (path / "config.json").exists() and not (path / SETTINGS_FILE).exists() else GR


def check_name(name: object, what: str = "model") -> str:
    """`name` when it may name a model; ValueError naming `what` otherwise."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"{what}: {name!r} is not a model name (letters, digits, '.', '_', '-'; 128 at most, "
                         f"starting with a letter or digit)")
    return name


@dataclass(frozen=True)
class ModelSpec:
    name: str
    directory: str | None  # None: the embedded default GR model
    kind: Kind

    @classmethod
    def parse(cls, text: str, kind: Kind | None = None) -> ModelSpec:
        """`DIR` or `NAME=DIR` (a `NAME` holds no '/': `a=b/c` is the model `a` in `b/c`)."""
        name, sep, directory = text.partition("=")
        if not sep or "/" in name:
            name, directory = model_name(text), text
        else:
            check_name(name)
        if not directory:
            raise ValueError(f"model: {text!r} names no directory (NAME=DIR or DIR)")
        directory = str(model_directory(directory))  # `beauty`: the model shipped in the package
        return cls(name, directory, kind or model_kind(directory))

    @classmethod
    def default(cls) -> ModelSpec:
        return cls(DEFAULT_NAME, None, GR)
