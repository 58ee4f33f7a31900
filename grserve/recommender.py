"""The public GR API in the dataset's own item ids: histories in, ranked items out.

It maps item ids to item rows and SID prompts, submits requests to the GREngine (or, for comparison, runs
the reference beam search) and turns the engine's item rows back into item ids, titles and SIDs. Each request
reads the live catalog's current version once and is answered wholly on it: its ids are resolved in that
version's table, the engine runs on that version's tables, and the answer's rows are read back in it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from grserve.bundle import GRBundle
from grserve.catalog.live import LiveCatalog
from grserve.catalog.process import CatalogProcess, process_wanted
from grserve.catalog.snapshot import CatalogSnapshot
from grserve.engine.gr.config import EngineConfig
from grserve.engine.gr.engine import GREngine
from grserve.engine.gr.request import GRRequest, GRResult
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
    catalog_version: int = 0


class Recommender:
    def __init__(self, bundle: GRBundle, config: EngineConfig | None = None, history_overflow: str = "truncate",
                 state_dir: str | Path | None = None, catalog_process: bool | None = None):
        """`state_dir`: where the live catalog's change log is kept (replayed here); None: in memory only.
        `catalog_process`: whether the catalog runs in a process of its own (catalog/process.py); None: by size."""
        if history_overflow not in ("truncate", "reject"):
            raise ValueError(f"history_overflow must be 'truncate' or 'reject', got {history_overflow!r}")
        self.bundle = bundle
        self.engine = GREngine(bundle, config)
        try:
            if bundle.directory is not None and process_wanted(bundle.table, catalog_process):
                self.catalog = CatalogProcess(self.engine.catalog, bundle.directory, state_dir,
                                              busy=self.engine.lend_core)
            else:
                self.catalog = LiveCatalog(self.engine.catalog, state_dir, bundle.directory,
                                           busy=self.engine.lend_core)
        except Exception:
            self.engine.shutdown()
            raise
        self.history_overflow = history_overflow

    def close(self) -> None:
        self.engine.shutdown()
        if isinstance(self.catalog, CatalogProcess):
            self.catalog.close()

    def prompt(self, rows: list[int], catalog: CatalogSnapshot | None = None) -> list[int]:
        """The prompt of a history given as item rows of `catalog` (default: the current version)."""
        keep = rows[-self.bundle.settings.max_history_items:] if rows else []
        return self.bundle.vocab.prompt((catalog or self.catalog.current).table.codes[keep])

    def request(self, history: list[int], top_n: int, beam_width: int, exclude_history: bool = True,
                exclude: set[int] = frozenset(), allow: set[int] | None = None,
                catalog: CatalogSnapshot | None = None) -> GRRequest:
        """A request in item rows of `catalog` (default: the current version), answered on that version."""
        catalog = catalog or self.catalog.current
        banned = set(exclude) | (set(history) if exclude_history else set())
        return GRRequest(self.prompt(history, catalog), beam_width, top_n, banned, allow, catalog=catalog)

    def rank(self, histories: list[list[int]], top_n: int, beam_width: int,
             exclude_history: bool = True) -> list[list[tuple[int, float, tuple[int, ...]]]]:
        """Per history (item rows of the current catalog version, oldest first): up to `top_n` (item row, score,
        SID), best first. All requests are submitted at once, so the engine batches them."""
        catalog = self.catalog.current
        futures = [self.engine.submit(self.request(h, top_n, beam_width, exclude_history, catalog=catalog))
                   for h in histories]
        return [f.result().items for f in futures]

    def _rows(self, ids: list, what: str, warnings: list[str], catalog: CatalogSnapshot) -> list[int]:
        rows = [catalog.table.row_of(str(i)) for i in ids]
        unknown = [str(i) for i, r in zip(ids, rows) if r is None]
        if unknown:
            warnings.append(f"unknown item ids in {what}, ignored: {unknown[:20]}")
        return [r for r in rows if r is not None]

    def _build(self, history: list, top_n: int, beam_width: int, exclude_history: bool,
               exclude: list | None, allow: list | None, deadline: float | None = None,
               priority: int = 0) -> tuple[GRRequest, list[str]]:
        warnings: list[str] = []
        catalog = self.catalog.current  # read once: the whole request is answered on this version
        rows = self._rows(history, "history", warnings, catalog)
        exclude_rows = set(self._rows(exclude or [], "exclude", warnings, catalog))
        allow_rows = set(self._rows(allow, "allow", warnings, catalog)) if allow is not None else None
        limit = self.bundle.settings.max_history_items
        if len(rows) > limit:
            if self.history_overflow == "reject":
                raise InvalidRequest("history", f"{len(rows)} known items exceed the model's context of {limit}")
            warnings.append(f"history truncated to its newest {limit} items")
        request = self.request(rows, top_n, beam_width, exclude_history, exclude_rows, allow_rows, catalog)
        request.deadline, request.priority = deadline, priority
        self.engine.validate(request)
        return request, warnings

    def _finish(self, request: GRRequest, ranked, warnings: list[str]) -> Recommendation:
        if len(ranked) < request.top_n:
            warnings.append(f"only {len(ranked)} items left after filtering (top_n={request.top_n})")
        table = request.catalog.table
        items = [RecommendedItem(table.raw_ids[i], score, list(sid), table.titles[i] if table.titles else None)
                 for i, score, sid in ranked]
        return Recommendation(items, warnings, len(request.prompt), request.catalog.version)

    def recommend(self, history: list, top_n: int = 10, beam_width: int = 64, exclude_history: bool = True,
                  exclude: list | None = None, allow: list | None = None,
                  reference: bool = False) -> Recommendation:
        request, warnings = self._build(history, top_n, beam_width, exclude_history, exclude, allow)
        if reference:
            b, catalog = self.bundle, request.catalog
            ranked = [(i.item, i.score, i.semantic_id) for i in reference_beam_search(
                b.model, request.prompt, beam_width, top_n, catalog.trie, b.vocab, request.exclude | catalog.disabled,
                request.allow)]
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
