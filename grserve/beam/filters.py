"""Per-request item filters (exclude the history, an `exclude` list, an `allow` list) turned into trie
nodes the beam may not enter.

A node is closed to a request when no item under it survives the filters, so beams never spend width on
a prefix that cannot yield an answer. Exclusions are few (a history, a block list): the nodes they empty
are found by counting removed items per node. An allow list is the opposite: the nodes it keeps are the
ancestors of its items. Either way only the touched nodes are computed, never a catalog-sized mask. Items the
catalog disabled are closed for every request already (beam/availability.py): a filter only adds what its own
exclusions close on top of them."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from grserve.beam.availability import Availability, closure_chain
from grserve.beam.candidates import CandidateTables


@dataclass
class NodeFilter:
    allow: bool  # True: `nodes` are the only nodes open; False: `nodes` are closed
    nodes: list[torch.Tensor]  # per selection level: level-1 nodes, level-2 nodes, ..., leaves (sorted)
    removed: set[int]  # items excluded explicitly (also removed when expanding leaves to items)
    allowed: set[int] | None

    def keeps(self, item: int) -> bool:
        return item not in self.removed and (self.allowed is None or item in self.allowed)


def build_filter(tables: CandidateTables, exclude: set[int], allow: set[int] | None,
                 availability: Availability | None = None) -> NodeFilter | None:
    if allow is None and not exclude:
        return None
    leaf_of_item, parent_of = tables.leaf_of_item, tables.parent_of
    items = torch.tensor(sorted(exclude if allow is None else allow - exclude), dtype=torch.long)
    if availability is not None:  # disabled items are closed already: only the enabled ones count here
        items = items[~availability.disabled[items]]
    if allow is not None:  # the allowed items' leaves, and their ancestors up to level 1
        opened = [torch.unique(leaf_of_item[items])]
        for level in range(len(parent_of) - 1, 0, -1):
            opened.append(torch.unique(parent_of[level][opened[-1]]))
        return NodeFilter(True, opened[::-1], set(exclude), set(allow))
    closed, children = [], items
    for step, (parent, degree) in enumerate(closure_chain(tables)):
        # A parent closes when its children closed here, plus those the catalog's disabled items closed, are all.
        parents, counts = torch.unique(parent[children], return_counts=True)
        if availability is not None:
            counts = counts + availability.closed_children[step][parents]
        children = parents[counts == degree[parents]]
        closed.append(children)
    return NodeFilter(False, closed[::-1], set(exclude), None)


def open_children(filters: list[NodeFilter | None], request_of_row: torch.Tensor, children: torch.Tensor,
                  level: int, num_nodes: int) -> torch.Tensor | None:
    """Bool [rows, D]: whether each candidate child node is open to its row's request (None: all open)."""
    if all(f is None for f in filters):
        return None
    key = request_of_row[:, None] * num_nodes + children
    closed = [r * num_nodes + f.nodes[level] for r, f in enumerate(filters) if f is not None and not f.allow]
    opened = [r * num_nodes + f.nodes[level] for r, f in enumerate(filters) if f is not None and f.allow]
    ok = torch.ones_like(children, dtype=torch.bool)
    if closed:
        ok &= ~torch.isin(key, torch.cat(closed))
    if opened:
        allow_rows = torch.tensor([f is not None and f.allow for f in filters])[request_of_row]
        ok &= ~allow_rows[:, None] | torch.isin(key, torch.cat(opened))
    return ok

