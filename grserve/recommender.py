"""Histories in, ranked items out: the dataset's item ids are mapped to SID prompts, beam search runs
over the trie, and the surviving triples are expanded into items (all items of a shared triple, each
with the triple's score)."""
from __future__ import annotations

from dataclasses import dataclass, field

from grserve.beam.search import beam_search
from grserve.bundle import GRBundle


@dataclass
class RecommendedItem:
    item_id: str
    score: float
    semantic_id: list[int]
    title: str | None = None


@dataclass
class Recommendation:
    items: list[RecommendedItem]
    warnings: list[str] = field(default_factory=list)
    prompt_tokens: int = 0


class Recommender:
    def __init__(self, bundle: GRBundle):
        self.bundle = bundle

    def prompt(self, rows: list[int]) -> list[int]:
        keep = rows[-self.bundle.settings.max_history_items:] if rows else []
        return self.bundle.vocab.prompt(self.bundle.table.codes[keep])

    def rank(self, histories: list[list[int]], top_n: int, beam_width: int,
             exclude_history: bool = True) -> list[list[tuple[int, float, tuple[int, ...]]]]:
        """Per history (item rows, oldest first): up to `top_n` (item row, score, SID), best first."""
        trie = self.bundle.trie
        results = beam_search(self.bundle.model, [self.prompt(h) for h in histories], beam_width, trie,
                              self.bundle.vocab)
        ranked = []
        for history, beams in zip(histories, results):
            seen = set(history) if exclude_history else set()
            out: list[tuple[int, float, tuple[int, ...]]] = []
            for codes, score in zip(beams.codes.tolist(), beams.scores.tolist()):
                out.extend((item, score, tuple(codes)) for item in trie.items_of(*codes) if item not in seen)
                if len(out) >= top_n:
                    break
            ranked.append(out[:top_n])
        return ranked

    def recommend(self, history: list[str], top_n: int = 10, beam_width: int = 64,
                  exclude_history: bool = True) -> Recommendation:
        if top_n < 1 or beam_width < 1:
            raise ValueError("top_n and beam_width must be at least 1")
        table, warnings = self.bundle.table, []
        rows = [table.row_of(str(i)) for i in history]
        unknown = [str(i) for i, r in zip(history, rows) if r is None]
        if unknown:
            warnings.append(f"unknown item ids in history, ignored: {unknown[:20]}")
        rows = [r for r in rows if r is not None]
        if len(rows) > self.bundle.settings.max_history_items:
            warnings.append(f"history truncated to its newest {self.bundle.settings.max_history_items} items")
        ranked = self.rank([rows], top_n, beam_width, exclude_history)[0]
        if len(ranked) < top_n:
            warnings.append(f"only {len(ranked)} valid items left after filtering (top_n={top_n})")
        titles = table.titles
        items = [RecommendedItem(table.raw_ids[i], score, list(sid), titles[i] if titles else None)
                 for i, score, sid in ranked]
        return Recommendation(items, warnings, len(self.prompt(rows)))
