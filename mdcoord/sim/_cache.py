"""A byte-bounded LRU for generated tables (tapes, bar tables, minute blocks)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LRUCache(Generic[V]):
    """Keeps the most recently used values while their total ``size(value)`` stays under budget.

    Generation is deterministic, so eviction only costs time, never changes an answer. A value
    larger than the whole budget is returned but not kept. Thread-safe (the model is shared by the
    server thread and test code).
    """

    def __init__(self, max_bytes: int, size: Callable[[V], int]) -> None:
        self.max_bytes = max_bytes
        self._size = size
        self._data: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_or_make(self, key: Hashable, make: Callable[[], V]) -> V:
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                return hit[0]
        value = make()  # outside the lock: two threads may both build; both get equal values
        nbytes = self._size(value)
        if nbytes > self.max_bytes:
            return value
        with self._lock:
            if key not in self._data:
                self._data[key] = (value, nbytes)
                self._bytes += nbytes
            while self._bytes > self.max_bytes:
                _, (_, n) = self._data.popitem(last=False)
                self._bytes -= n
        return value

    def peek(self, key: Hashable) -> V | None:
        """The cached value or None, without building or reordering."""
        with self._lock:
            hit = self._data.get(key)
            return None if hit is None else hit[0]

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        return self._bytes
