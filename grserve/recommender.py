"""The public GR API in the dataset's own item ids: histories in, ranked items out.

It maps item ids to item rows and SID prompts, submits requests to the GREngine (or, for comparison, runs
the reference beam search) and turns the engine's item rows back into item ids, titles and SIDs."""
from __future__ import annotations

from dataclasses import dataclass, field

from grserve.bundle import GRBundle
from grserve.engine.config import EngineConfig
from grserve.engine.gr_engine import GREngine
from grserve.engine.request import GRRequest, GRResult
from grserve.errors import InvalidRequest
from grserve.reference import reference_beam_search


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
    def __init__(self, bundle: GRBundle, config: EngineConfig | None = None, history_overflow: str = "truncate"):
        if history_overflow not in ("truncate", "reject"):
            raise ValueError(f"history_overflow must be 'truncate' or 'reject', got {history_overflow!r}")
        self.bundle = bundle
        self.engine = GREngine(bundle, config)
        self.history_overflow = history_overflow

    def close(self) -> None:
        self.engine.shutdown()

    def prompt(self, rows: list[int]) -> list[int]:
        keep = rows[-self.bundle.settings.max_history_items:] if rows else []
        return self.bundle.vocab.prompt(self.bundle.table.codes[keep])

    def request(self, history: list[int], top_n: int, beam_width: int, exclude_history: bool = True,
                exclude: set[int] = frozenset(), allow: set[int] | None = None) -> GRRequest:
        banned = set(exclude) | (set(history) if exclude_history else set())
        return GRRequest(self.prompt(history), beam_width, top_n, banned, allow)

    def rank(self, histories: list[list[int]], top_n: int, beam_width: int,
             exclude_history: bool = True) -> list[list[tuple[int, float, tuple[int, int, int]]]]:
        """Per history (item rows, oldest first): up to `top_n` (item row, score, SID), best first. All
        requests are submitted at once, so the engine batches them."""
        futures = [self.engine.submit(self.request(h, top_n, beam_width, exclude_history)) for h in histories]
        return [f.result().items for f in futures]

    def _rows(self, ids: list, what: str, warnings: list[str]) -> list[int]:
        rows = [self.bundle.table.row_of(str(i)) for i in ids]
        unknown = [str(i) for i, r in zip(ids, rows) if r is None]
        if unknown:
            warnings.append(f"unknown item ids in {what}, ignored: {unknown[:20]}")
        return [r for r in rows if r is not None]

    def _build(self, history: list, top_n: int, beam_width: int, exclude_history: bool,
               exclude: list | None, allow: list | None, deadline: float | None = None,
               priority: int = 0) -> tuple[GRRequest, list[str]]:
        warnings: list[str] = []
        rows = self._rows(history, "history", warnings)
        exclude_rows = set(self._rows(exclude or [], "exclude", warnings))
        allow_rows = set(self._rows(allow, "allow", warnings)) if allow is not None else None
        limit = self.bundle.settings.max_history_items
        if len(rows) > limit:
            if self.history_overflow == "reject":
                raise InvalidRequest("history", f"{len(rows)} known items exceed the model's context of {limit}")
            warnings.append(f"history truncated to its newest {limit} items")
        request = self.request(rows, top_n, beam_width, exclude_history, exclude_rows, allow_rows)
        request.deadline, request.priority = deadline, priority
        self.engine.validate(request)
        return request, warnings

    def _finish(self, request: GRRequest, ranked, warnings: list[str]) -> Recommendation:
        if len(ranked) < request.top_n:
            warnings.append(f"only {len(ranked)} items left after filtering (top_n={request.top_n})")
        table = self.bundle.table
        items = [RecommendedItem(table.raw_ids[i], score, list(sid), table.titles[i] if table.titles else None)
                 for i, score, sid in ranked]
        return Recommendation(items, warnings, len(request.prompt))

    def recommend(self, history: list, top_n: int = 10, beam_width: int = 64, exclude_history: bool = True,
                  exclude: list | None = None, allow: list | None = None,
                  reference: bool = False) -> Recommendation:
        request, warnings = self._build(history, top_n, beam_width, exclude_history, exclude, allow)
        if reference:
            b = self.bundle
            ranked = [(i.item, i.score, i.semantic_id) for i in reference_beam_search(
                b.model, request.prompt, beam_width, top_n, b.trie, b.vocab, request.exclude, request.allow)]
        else:
            ranked = self.engine.submit(request).result().items
        return self._finish(request, ranked, warnings)

    async def recommend_async(self, history: list, top_n: int = 10, beam_width: int = 64,
                              exclude_history: bool = True, exclude: list | None = None,
                              allow: list | None = None, deadline: float | None = None,
                              priority: int = 0) -> tuple[Recommendation, GRResult]:
        request, warnings = self._build(history, top_n, beam_width, exclude_history, exclude, allow, deadline,
                                        priority)
        result = await self.engine.submit_async(request)
        return self._finish(request, result.items, warnings), result
