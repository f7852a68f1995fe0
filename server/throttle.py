"""Per-key throttles with bounded memory: a token bucket for writes, backoff after failed passwords.

Both keep their state in an LRU of at most ``max_keys`` keys, so a flood of new
addresses or user names costs a fixed amount of memory; a key pushed out simply
starts afresh.  State is per process: with ``workers = N`` each worker counts
on its own.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from aiohttp import web

from .lru import ByteBudgetLRU

MAX_KEYS = 10_000


class Throttled(Exception):
    """Refused for now; ``retry_after`` says for how many seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"try again in {retry_after:.0f} s")
        self.retry_after = retry_after

    @property
    def seconds(self) -> int:
        """Whole seconds, at least 1, for Retry-After."""
        return max(1, math.ceil(self.retry_after))


def too_many_requests(exc: Throttled, what: str) -> web.HTTPTooManyRequests:
    """A 429 with Retry-After and one line saying what was refused and when to try again."""
    return web.HTTPTooManyRequests(
        text=f"429 {what}: try again in {exc.seconds} s\n", headers={"Retry-After": str(exc.seconds)}
    )


def _keys(max_keys: int) -> ByteBudgetLRU:
    return ByteBudgetLRU(max_keys, lambda _: 1)  # a budget counted in keys


class RateLimiter:
    """A token bucket per key: up to ``burst`` at once, refilled at ``per_minute``."""

    def __init__(
        self, per_minute: float, burst: int, max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: ByteBudgetLRU[tuple[float, float]] = _keys(max_keys)
        self._clock = clock

    def take(self, key: str) -> None:
        """Spend one token of ``key``'s bucket, or raise :class:`Throttled` when it is empty."""
        now = self._clock()
        held = self._buckets.get(key)
        tokens = self.burst if held is None else min(self.burst, held[0] + (now - held[1]) * self.rate)
        if tokens < 1.0:
            self._buckets.put(key, (tokens, now))
            raise Throttled((1.0 - tokens) / self.rate)
        self._buckets.put(key, (tokens - 1.0, now))


class FailureBackoff:
    """Exponential backoff per key after repeated failures.

    After ``threshold`` failures a key is refused for ``base`` seconds, and each
    further failure doubles that, up to ``max_delay``: an attacker gets a handful
    of guesses and then about one per ``max_delay``, while a user whose name is
    under attack waits at most ``max_delay`` for a try.  A key is forgotten
    ``window`` seconds after its last failure or block ended, or on success.
    """

    def __init__(
        self,
        threshold: int = 5,
        base: float = 30.0,
        max_delay: float = 900.0,
        window: float = 900.0,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold, self.base, self.max_delay, self.window = threshold, base, max_delay, window
        self._state: ByteBudgetLRU[tuple[int, float]] = _keys(max_keys)  # key -> (failures, blocked until)
        self._clock = clock

    def _current(self, key: str, now: float) -> tuple[int, float]:
        held = self._state.get(key)
        if held is None or now > held[1] + self.window:
            return 0, now
        return held

    def check(self, key: str) -> None:
        """Raise :class:`Throttled` while ``key`` is blocked."""
        now = self._clock()
        until = self._current(key, now)[1]
        if until > now:
            raise Throttled(until - now)

    def failed(self, key: str) -> None:
        now = self._clock()
        failures = self._current(key, now)[0] + 1
        until = now
        if failures >= self.threshold:
            until += min(self.base * 2.0 ** min(failures - self.threshold, 32), self.max_delay)
        self._state.put(key, (failures, until))

    def succeeded(self, key: str) -> None:
        self._state.pop(key)
