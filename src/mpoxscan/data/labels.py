"""Label resolution inside a duplicate cluster: agreeing or finer labels win, contradicting labels are conflicts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabelVote:
    label: str  # as the source names it (a coarse label keeps its folder's name)
    fine: tuple[str, ...]  # the fine classes it may stand for: (label,) when it is fine itself


def resolve(votes: list[LabelVote]) -> str | None:
    """The finest label compatible with every vote, or None when the votes contradict each other.

    A fine label is compatible with a coarse one that lists it (MSLD v2 ``Chickenpox`` with MSLD v1
    ``Others = Chickenpox|Measles``); two different fine labels, or a fine label outside a coarse one's list, conflict.
    """
    if not votes:
        return None
    allowed = set(votes[0].fine)
    for vote in votes[1:]:
        allowed &= set(vote.fine)
    if not allowed:
        return None
    if len(allowed) == 1:
        return next(iter(allowed))
    # Still ambiguous between several fine classes: keep the coarse label, if all votes name the same one.
    names = {v.label for v in votes}
    return names.pop() if len(names) == 1 else None
