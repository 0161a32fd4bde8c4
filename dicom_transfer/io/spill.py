"""Sorting more items than memory should hold: sorted runs spilled to temporary files, merged."""

from __future__ import annotations

import contextlib
import heapq
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

RUN = 50_000  # items held at once (a few tens of MB of small dicts or tuples)


def sorted_spilled(items: Iterable, key: Callable[[Any], Any], run: int | None = None) -> Iterator:
    """``items`` sorted by ``key`` (stable), holding at most ``run`` (default :data:`RUN`) of them
    at once: each sorted run goes to an anonymous temporary file, and the runs are merged as they
    are read."""
    run = run or RUN
    held: list = []
    runs: list[IO[bytes]] = []
    with contextlib.ExitStack() as files:
        for item in items:
            held.append(item)
            if len(held) >= run:
                runs.append(_spill(sorted(held, key=key), files.enter_context(tempfile.TemporaryFile())))
                held = []
        held.sort(key=key)
        if not runs:
            yield from held
            return
        yield from heapq.merge(*(_read(spilled) for spilled in runs), held, key=key)


def _spill(items: list, spilled: IO[bytes]) -> IO[bytes]:
    pickler = pickle.Pickler(spilled, protocol=pickle.HIGHEST_PROTOCOL)
    for item in items:
        pickler.dump(item)
        pickler.clear_memo()
    spilled.seek(0)
    return spilled


def _read(spilled: IO[bytes]) -> Iterator:
    unpickler = pickle.Unpickler(spilled)
    while True:
        try:
            yield unpickler.load()
        except EOFError:
            return
