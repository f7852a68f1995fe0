"""The latest state of each notebook viewer, for Python to read and set.

The bundled client POSTs its state to ``/-/viewer/state/<token>`` as the user pans (``{s, g, pg, c}``:
state, client generation, the last server generation it saw, client id) and applies the states
its event stream ``/-/viewer/events/<token>`` sends (``{k: "s", s, g}``).  A token Python gave a
state (``PUT``, ``ngstate.show``: a random token only its pages know) is kept here: its event
streams push every new state to the other clients, and a client POST made before it saw the
latest state is answered 412 (the client then waits for the stream, as neuroglancer's own
server does).  States posted for other tokens (``#!`` pages, which all share the token
``ngserve``) are not kept: one user's view, share tokens in its URLs included, is no one else's
to read.  Memory is bounded by a byte budget over all tokens, least recently used first out.
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
    holders: set[str] = field(default_factory=set)  # clients known to have this generation: not sent it
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
        entry.state, entry.origin, entry.size, entry.holders = state, origin, size, {origin}
        entry.generation = str(next(self._generations))
        if origin == PYTHON:
            entry.base = base
        waiting, entry.changed = entry.changed, asyncio.Event()
        self._states.put(token, entry)  # re-put: its size may have changed
        waiting.set()
        return entry

    def set(self, token: str, state: dict, size: int, base: str | None) -> ViewerState:
        """Python's state for ``token``: pushed to every client of it."""
        return self._update(token, state, PYTHON, size, base)

    def post(self, token: str, state: dict, client: str, seen: str, size: int) -> ViewerState | None:
        """A client's state for a kept token; None when the client has not seen the latest state
        (412: it gets that one on its event stream, and its change gives way, as in neuroglancer's
        own server; else a page still loading could overwrite another page's newer pan)."""
        entry = self._states.get(token)
        if entry is None:
            raise KeyError(token)
        if entry.state == state:
            # Every page of a viewer posts the same normalised state after loading it: no new
            # generation, and none pushed to this page (a reset would undo a pan it made meanwhile).
            entry.holders.add(client)
            return entry
        if seen != entry.generation:
            return None
        return self._update(token, state, client, size)
