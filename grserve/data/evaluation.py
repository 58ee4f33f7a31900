"""Recall@K and NDCG@K on leave-one-out examples, for the GR model and a popularity baseline ranked on
the same examples (one held-out target per user, full ranking over the catalog)."""
from __future__ import annotations

import math
from collections import Counter

from tqdm import tqdm

from grserve.data.split import Example

KS = (5, 10)

def ranking_metrics(ranked: list[list[int]], targets: list[int], ks: tuple[int, ...] = KS) -> dict:
    """Mean Recall@K (hit rate: one target per user) and NDCG@K (1/log2(rank+2) at the target's rank)."""
    out = {}
    for k in ks:
        hits = [r[:k].index(t) if t in r[:k] else None for r, t in zip(ranked, targets)]
        out[f"recall@{k}"] = sum(h is not None for h in hits) / len(targets)
        out[f"ndcg@{k}"] = sum(1 / math.log2(h + 2) for h in hits if h is not None) / len(targets)
    return out

def popularity_ranking(examples: list[Example], num_items: int, top_n: int,
                       exclude_history: bool = True) -> list[list[int]]:
    """Items by interaction count over the examples' histories (so nothing after a target is seen)."""
    counts = Counter(row for e in examples for row in e.history)
    order = sorted(range(num_items), key=lambda r: (-counts[r], r))
    ranked = []
    for e in examples:
        seen = set(e.history) if exclude_history else set()
        ranked.append([r for r in order[:top_n + len(seen)] if r not in seen][:top_n])
    return ranked

def evaluate(recommender, examples: list[Example], beam_width: int = 50, batch_size: int = 64,
             exclude_history: bool = True, progress: bool = True) -> dict:
    top_n = max(KS)
    ranked: list[list[int]] = []
    batches = range(0, len(examples), batch_size)
    for start in tqdm(batches, desc="eval", disable=not progress, leave=False):
        chunk = examples[start:start + batch_size]
        results = recommender.rank([e.history for e in chunk], top_n, beam_width, exclude_history)
        ranked.extend([row for row, _, _ in r] for r in results)
    targets = [e.target for e in examples]
    num_items = len(recommender.bundle.table)
    return {"model": ranking_metrics(ranked, targets),
            "popularity": ranking_metrics(popularity_ranking(examples, num_items, top_n, exclude_history),
                                          targets),
            "users": len(examples), "beam_width": beam_width}

def round_metrics(result: dict, digits: int = 4) -> dict:
    return {k: ({m: round(float(x), digits) for m, x in v.items()} if isinstance(v, dict) else v)
            for k, v in result.items()}

