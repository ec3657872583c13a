"""Typed strategy options: the one check that a strategy's options name only fields of its dataclass."""

from __future__ import annotations

import dataclasses

from mpoxscan.errors import MpoxscanError


def refuse_unknown(cls, options: dict, strategy: str) -> None:
    """Raise a one-line error for option names that ``cls`` (a dataclass) does not have: a typo must not pass."""
    unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise MpoxscanError(f"unknown option(s) of the {strategy} strategy: {', '.join(sorted(unknown))}")
