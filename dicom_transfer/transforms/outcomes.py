"""The per-instance outcome record, counted into the summary."""

from __future__ import annotations

from typing import NamedTuple

OUTCOMES = "outcomes"


class Outcome(NamedTuple):
    """What happened to one instance: ``success``, ``unchanged`` or ``filtered``, with its size."""

    kind: str
    size: int
    source: str
    destination: str
