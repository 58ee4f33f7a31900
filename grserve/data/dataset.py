"""The in-memory form every dataset reader produces: a catalog and users' time-ordered sequences."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SequenceDataset:
    """A catalog of items (row i is the item with the dataset's own id `item_ids[i]`) and, per user,
    the rows of the items they interacted with, oldest first."""

    name: str
    item_ids: list[str]
    titles: list[str]
    # Text describing each item (title, genres, brand, categories): what the item embeddings encode.
    texts: list[str]
    sequences: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if len(self.titles) != n or len(self.texts) != n:
            raise ValueError(f"dataset {self.name}: titles/texts must have one entry per item ({n})")
        if len(set(self.item_ids)) != n:
            raise ValueError(f"dataset {self.name}: item ids are not unique")
        for user, seq in self.sequences.items():
            if any(not 0 <= row < n for row in seq):
                raise ValueError(f"dataset {self.name}: user {user} has an item row outside the catalog")

    @property
    def num_interactions(self) -> int:
        return sum(len(s) for s in self.sequences.values())

    def describe(self) -> dict:
        return {"name": self.name, "users": len(self.sequences), "items": len(self.item_ids),
                "interactions": self.num_interactions}
