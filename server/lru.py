"""A least-recently-used map bounded by a byte budget, for the servers' memory caches."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, TypeVar

V = TypeVar("V")


class ByteBudgetLRU(Generic[V]):
    """Values by key, evicting the least recently used once their cost passes ``budget``.

    ``cost`` says how many bytes a value holds; a value costlier than the whole
    budget is not kept at all.
    """

    def __init__(self, budget: int, cost: Callable[[V], int]) -> None:
        self.budget = budget
        self.used = 0
        self._cost = cost
        self._items: OrderedDict[str, V] = OrderedDict()

    def get(self, key: str, touch: bool = True) -> V | None:
        """The value, made the most recently used unless ``touch`` is false."""
        value = self._items.get(key)
        if value is not None and touch:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: V, low: bool = False) -> None:
        """Keep ``value``; ``low``: as the least recently used, so it is the first to go and never
        pushes out a value put normally (a full cache does not keep it at all)."""
        old = self._items.pop(key, None)
        if old is not None:
            self.used -= self._cost(old)
        cost = self._cost(value)
        if cost > self.budget:
            return
        self._items[key] = value
        if low:
            self._items.move_to_end(key, last=False)
        self.used += cost
        while self.used > self.budget:
            _, dropped = self._items.popitem(last=False)
            self.used -= self._cost(dropped)

    def pop(self, key: str) -> None:
        """Forget ``key`` (no error when absent)."""
        old = self._items.pop(key, None)
        if old is not None:
            self.used -= self._cost(old)
