"""The full engine against the reference beam search on the same requests, as a ratio from one run
(not a test: a measurement)."""
from __future__ import annotations

import random
import time

from grserve.bundle import GRBundle
from grserve.recommender import Recommender
from grserve.reference import reference_beam_search


def run_engine_bench(bundle: GRBundle, beam_width: int = 128, requests: int = 4, top_n: int = 10,
                     seed: int = 0) -> dict:
    rng = random.Random(seed)
    n, length = len(bundle.table), bundle.settings.max_history_items
    histories = [[rng.randrange(n) for _ in range(length)] for _ in range(requests)]
    rec = Recommender(bundle)
    try:
        rec.rank(histories[:1], top_n, beam_width)  # warm-up
        started = time.perf_counter()
        fast = rec.rank(histories, top_n, beam_width)
        engine_s = time.perf_counter() - started
        started = time.perf_counter()
        slow = [reference_beam_search(bundle.model, rec.prompt(h), beam_width, top_n, bundle.trie,
                                      bundle.vocab, set(h)) for h in histories]
        reference_s = time.perf_counter() - started
    finally:
        rec.close()
    same = all([i for i, _, _ in f] == [r.item for r in s] for f, s in zip(fast, slow))
    return {"beam_width": beam_width, "requests": requests, "prompt_tokens": 1 + bundle.vocab.levels * length,
            "engine_ms_per_request": round(1000 * engine_s / requests, 2),
            "reference_ms_per_request": round(1000 * reference_s / requests, 2),
            "speedup": round(reference_s / engine_s, 2), "same_items": same}
