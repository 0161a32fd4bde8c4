"""The associations of one worker process to one peer, pooled.

The DoFns of a worker process share them: a DoFn joins the pool in ``setup()`` and leaves it
in ``teardown()``; an association (a :class:`~dicom_transfer.io.dimse.Link`) is borrowed for
one element (a series, a batch of instances) and given back open, so consecutive elements
reuse it. At most ``max_associations`` are open per process and peer, below what the PACS
accepts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator

from dicom_transfer.io.dimse import AssociationFailed, DimseError, DimseSettings, Link

OPEN_ATTEMPTS = 3


class AssociationPool:
    """The associations of one worker process to one peer (see the module docstring)."""

    _pools: dict[DimseSettings, AssociationPool] = {}
    _lock = threading.Lock()

    def __init__(self, settings: DimseSettings) -> None:
        self.settings = settings
        self.slots = threading.BoundedSemaphore(settings.max_associations)
        self.idle: list[Link] = []
        self.users = 0
        self.lock = threading.Lock()

    @classmethod
    def join(cls, settings: DimseSettings) -> AssociationPool:
        """The process's pool for ``settings`` (a DoFn's ``setup()``)."""
        with cls._lock:
            pool = cls._pools.setdefault(settings, AssociationPool(settings))
            pool.users += 1
            return pool

    def leave(self) -> None:
        """A DoFn's ``teardown()``: the last one to leave releases the idle associations."""
        with self.lock:
            self.users -= 1
            closing = self.idle if self.users <= 0 else []
            if self.users <= 0:
                self.idle = []
        for link in closing:
            self._close(link)

    @contextlib.contextmanager
    def borrow(self, contexts: list[tuple[str, tuple[str, ...]]], scp_roles: Iterable[str] = ()
               ) -> Iterator[Link]:
        """An association negotiated for ``contexts`` (``(abstract syntax, syntaxes)``), reused
        when an idle one covers them. A borrower that hits a ``DimseError`` gets it aborted
        rather than given back.

        Raises
        ------
        AssociationFailed
            The peer could not be reached or refused the association.
        """
        pairs = [(abstract, syntax) for abstract, syntaxes in contexts for syntax in syntaxes]
        roles = list(scp_roles)
        link = self._take(pairs, roles)
        if link is None:
            link = self._open(contexts, roles, pairs)
        try:
            link.engage()
            yield link
        except DimseError:
            link.abort()
            self.slots.release()
            raise
        except BaseException:
            self._close(link)
            raise
        link.on_store = None
        link.disengage()
        if link.alive:
            with self.lock:
                self.idle.append(link)
        else:
            self.slots.release()

    def _open(self, contexts: list[tuple[str, tuple[str, ...]]], roles: list[str],
              pairs: list[tuple[str, str]]) -> Link:
        """A new association (or one that became idle while waiting for a slot and covers
        ``pairs``). When the peer refuses it, this process's idle ones are closed (a PACS may
        take fewer associations than the cap) and it is asked again, ``OPEN_ATTEMPTS`` times in
        all, with a short backoff."""
        for attempt in range(OPEN_ATTEMPTS):
            if (idle := self._acquire_slot(pairs, roles)) is not None:
                return idle
            try:
                return Link(self.settings, contexts, roles)
            except AssociationFailed:
                self.slots.release()
                if attempt + 1 >= OPEN_ATTEMPTS:
                    raise
                with self.lock:
                    spare, self.idle = self.idle, []
                for link in spare:
                    self._close(link)
                time.sleep(0.1 * 2 ** attempt)  # a busy PACS refuses for a moment
            except BaseException:
                self.slots.release()
                raise
        raise AssertionError("unreachable")

    def _take(self, pairs: list[tuple[str, str]], roles: list[str]) -> Link | None:
        with self.lock:
            for link in self.idle:
                if link.covers(pairs, roles):
                    self.idle.remove(link)
                    return link
        return None

    def _acquire_slot(self, pairs: list[tuple[str, str]], roles: list[str]) -> Link | None:
        """A free slot (``None``), or an association covering ``pairs`` given back meanwhile."""
        while not self.slots.acquire(timeout=0.05):
            if (link := self._take(pairs, roles)) is not None:
                return link
            with self.lock:  # no free slot: an idle association of other contexts gives its own
                victim = self.idle.pop(0) if self.idle else None
            if victim is not None:
                self._close(victim)
        return None

    def _close(self, link: Link) -> None:
        link.close()
        self.slots.release()
