"""Benchmark workloads: (a) the embedded MovieLens-100K model with test users' histories; (b) a
synthetic catalog of 1,000,000 items and an 8-layer, hidden-512 model, with prompts of fixed lengths."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from grserve.bundle import DEFAULT_MODEL_DIR, GRBundle
from grserve.data.recbole import cache_dir


@dataclass
class Workload:
    name: str
    model_dir: Path
    beam_width: int
    top_n: int
    prompts: list[list[int]]
    # the same requests in the HTTP API's terms (dataset item ids), where the workload has them
    histories: list[list[str]] | None = None

    @property
    def prompt_len(self) -> int:
        return round(sum(len(p) for p in self.prompts) / len(self.prompts))


def movielens_workload(beam_width: int = 128, top_n: int = 10, users: int = 200) -> Workload:
    """Prompts of the first `users` test users of the leave-one-out split (their full history but the target)."""
    from grserve.data.recbole import load_movielens_100k
    from grserve.data.split import leave_one_out
    bundle = GRBundle.load(DEFAULT_MODEL_DIR)
    dataset = load_movielens_100k()
    to_row = [bundle.table.row_of(i) for i in dataset.item_ids]
    examples = leave_one_out({u: [to_row[r] for r in s] for u, s in dataset.sequences.items()}).test[:users]
    keep = bundle.settings.max_history_items
    prompts = [bundle.vocab.prompt(bundle.table.codes[e.history[-keep:]]) for e in examples]
    histories = [[bundle.table.raw_ids[r] for r in e.history[-keep:]] for e in examples]
    return Workload(f"a: ml-100k W={beam_width}", DEFAULT_MODEL_DIR, beam_width, top_n, prompts, histories)


def synthetic_model_dir(items: int = 1_000_000, layers: int = 8, hidden: int = 512) -> Path:
    """A synthetic model directory, written once into the cache (about 2 s for 1M items)."""
    from grserve.items.synthetic import write_synthetic
    directory = cache_dir() / "bench" / f"synth-{items}-{layers}x{hidden}"
    if not (directory / "gr_config.json").exists():
        write_synthetic(directory, num_items=items, num_layers=layers, hidden_size=hidden, num_heads=8,
                        num_kv_heads=2, max_history_items=700)
    return directory


def synthetic_workload(model_dir: Path, prompt_len: int, beam_width: int, top_n: int = 10,
                       requests: int = 64, seed: int = 0) -> Workload:
    """Prompts of exactly `prompt_len` tokens (<bos> + SIDs of random catalog items)."""
    bundle = GRBundle.load(model_dir)
    rng = random.Random(seed)
    items = (prompt_len - 1) // 3
    prompts = []
    for _ in range(requests):
        prompt = bundle.vocab.prompt(bundle.table.codes[[rng.randrange(len(bundle.table)) for _ in range(items)]])
        prompts.append(prompt + prompt[1:prompt_len - len(prompt) + 1])  # pad to the exact length with SID tokens
    return Workload(f"b: 1M items P={prompt_len} W={beam_width}", model_dir, beam_width, top_n, prompts)
