"""Traffic splits for A/B tests and canaries: a logical model name whose requests go to physical models in set
proportions (`home=gr-a:90,gr-b:10`), sticky per user.

A user lands in [0, 1) at a stable hash of the split's name and the user's key (blake2b, so every router and
every restart agrees; the split's name in it lets two splits divide users independently), and takes the model
whose share of the cumulative weights holds that point. Changing the weights moves only the users between the
old and the new boundaries. A request with no key is placed at random."""
from __future__ import annotations

import hashlib
import json
import random
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

from grserve.server.model_spec import check_name


@dataclass(frozen=True)
class Split:
    name: str
    arms: tuple[tuple[str, float], ...]  # (physical model, weight > 0), in the order given

    def __post_init__(self):
        check_name(self.name, f"split {self.name!r}")
        if len(self.arms) < 2:
            raise ValueError(f"split {self.name!r}: give two models or more (model:weight,model:weight)")
        models = [m for m, _ in self.arms]
        for model, weight in self.arms:
            check_name(model, f"split {self.name!r}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
                raise ValueError(f"split {self.name!r}: {model}'s weight must be a positive number, got {weight!r}")
            if models.count(model) > 1:
                raise ValueError(f"split {self.name!r}: {model} appears twice")
        if self.name in models:
            raise ValueError(f"split {self.name!r}: a split cannot send its own name to itself")

    def shares(self) -> dict[str, float]:
        """Each model's share of the traffic, summing to 1."""
        total = sum(w for _, w in self.arms)
        return {m: w / total for m, w in self.arms}

    def choose(self, key: str | None) -> str:
        """The model for the user `key` (None: at random)."""
        point = random.random() if key is None else _unit(f"{self.name}\0{key}")
        total, edge = sum(w for _, w in self.arms), 0.0
        for model, weight in self.arms:
            edge += weight / total
            if point < edge:
                return model
        return self.arms[-1][0]  # float rounding left the last edge a hair below 1


def _unit(text: str) -> float:
    """A stable point in [0, 1) for `text`."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def parse_split(text: str) -> Split:
    """`NAME=MODEL:WEIGHT,MODEL:WEIGHT[,...]`, as `grserve router --split` takes it."""
    name, sep, arms = text.partition("=")
    if not sep or not arms:
        raise ValueError(f"--split {text!r}: expected NAME=MODEL:WEIGHT,MODEL:WEIGHT (e.g. home=gr-a:90,gr-b:10)")
    parsed = []
    for arm in arms.split(","):
        model, sep, weight = arm.strip().rpartition(":")
        try:
            parsed.append((model, float(weight) if sep else None))
        except ValueError:
            raise ValueError(f"--split {text!r}: {arm.strip()!r}: the weight is not a number") from None
        if not sep:
            raise ValueError(f"--split {text!r}: {arm.strip()!r} is not MODEL:WEIGHT")
    return Split(name.strip(), tuple(parsed))


def load_splits(path: str | Path) -> list[Split]:
    """A TOML, YAML or JSON file of `NAME = {MODEL = WEIGHT, ...}` tables, one per split."""
    path = Path(path)
    text = path.read_text()
    data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text) if path.suffix == ".json" \
        else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of splits (NAME = {{MODEL = WEIGHT, ...}})")
    splits = []
    for name, arms in data.items():
        if not isinstance(arms, dict):
            raise ValueError(f"{path}: split {name!r}: expected a table of MODEL = WEIGHT, got {arms!r}")
        try:
            splits.append(Split(str(name), tuple(arms.items())))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return splits


def by_name(splits: list[Split]) -> dict[str, Split]:
    """The splits by their logical name; ValueError when two share one."""
    named: dict[str, Split] = {}
    for split in splits:
        if split.name in named:
            raise ValueError(f"split {split.name!r} is given twice")
        named[split.name] = split
    for split in splits:
        nested = [m for m, _ in split.arms if m in named]
        if nested:
            raise ValueError(f"split {split.name!r}: {nested[0]} is a split itself: a split's models are physical")
    return named
