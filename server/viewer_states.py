"""The latest viewer state per viewer token, for Python to read and set (notebook viewers).

The bundled client POSTs its state to ``/-/viewer/state/<token>`` as the user pans (``{s, g, pg, c}``:
state, client generation, the last server generation it saw, client id) and applies the states
its event stream ``/-/viewer/events/<token>`` sends (``{k: "s", s, g}``).  Here each token keeps
its latest state.  A token whose state Python set (``PUT``) is *owned*: its event streams push
every new state to the other clients, and a client POST made before it saw Python's state is
answered 412 (the client then waits for the stream, as neuroglancer's own server does).  States
of other tokens (``#!`` pages) are only kept; their pages open no stream.  Memory is bounded by a
byte budget over all tokens, least recently used first out.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field

from .lru import ByteBudgetLRU

BUDGET = 32 << 20  # bytes of state JSON kept over all tokens
PYTHON = ""  # the origin of states set by PUT (client ids are random hex)


@dataclass
class ViewerState:
    state: dict | None = None
    generation: str = ""
    origin: str = PYTHON  # the client id whose POST made this generation, PYTHON for PUT
    owned: bool = False  # Python set a state: streams push states
    base: str | None = None  # the base URL Python's state names data by (pages rewrite it to their own)
    size: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def message(self) -> bytes:
        msg = {"k": "s", "s": self.state, "g": self.generation}
        if self.base:
            msg["b"] = self.base
        return b"data: " + json.dumps(msg, separators=(",", ":")).encode() + b"\n\n"


class ViewerStates:
    def __init__(self, budget: int = BUDGET) -> None:
        self._states: ByteBudgetLRU[ViewerState] = ByteBudgetLRU(budget, lambda v: v.size)
        self._generations = itertools.count(1)

    def get(self, token: str) -> ViewerState | None:
        return self._states.get(token)

    def _update(self, token: str, state: dict, origin: str, size: int, base: str | None = None) -> ViewerState:
        entry = self._states.get(token) or ViewerState()
        self._states.pop(token)  # before its size changes: the budget subtracts what it held
        entry.state, entry.origin, entry.size = state, origin, size
        entry.generation = str(next(self._generations))
        if origin == PYTHON:
            entry.owned, entry.base = True, base
        waiting, entry.changed = entry.changed, asyncio.Event()
        self._states.put(token, entry)  # re-put: its size may have changed
        waiting.set()
        return entry

    def set(self, token: str, state: dict, size: int, base: str | None) -> ViewerState:
        """Python's state for ``token``: pushed to every client of it."""
        return self._update(token, state, PYTHON, size, base)

    def post(self, token: str, state: dict, client: str, seen: str, size: int) -> ViewerState | None:
        """A client's state; None when it is stale (Python set a newer one it has not seen: 412)."""
        entry = self._states.get(token)
        if entry is not None and entry.owned and entry.origin == PYTHON and seen != entry.generation:
            return None
        if entry is not None and entry.state == state:
            # Every page of a viewer posts the same normalised state after loading it: no new generation,
            # or each would be pushed to the others and reset them (a pan made meanwhile would be lost).
            return entry
        return self._update(token, state, client, size)
