"""Leave-one-out split (SASRec, S3-Rec, TIGER): the last item is the test target, the second-to-last
the validation target, everything before them trains."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Example:
    user: str
    history: list[int]
    target: int


@dataclass
class LeaveOneOutSplit:
    train: dict[str, list[int]]
    valid: list[Example]
    test: list[Example]


def leave_one_out(sequences: dict[str, list[int]]) -> LeaveOneOutSplit:
    """Users with fewer than 3 interactions only train: they have no history left to predict from."""
    train, valid, test = {}, [], []
    for user, seq in sequences.items():
        if len(seq) < 3:
            train[user] = list(seq)
            continue
        train[user] = seq[:-2]
        valid.append(Example(user, seq[:-2], seq[-2]))
        test.append(Example(user, seq[:-1], seq[-1]))
    return LeaveOneOutSplit(train, valid, test)
