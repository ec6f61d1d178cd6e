"""Coverage: the key ranges proven complete, as disjoint sorted half-open intervals.

A key is whatever axis a data type is fetched along: candle slot ordinals, trade times in epoch
ms. A range is *proven* when an answer of the exchange shows that every row in it is known
(rows, or the certainty that there are none: an interval without trades has no candle). The
planner plans only what is not covered; the cache stores coverage next to the rows.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["Coverage"]


class Coverage:
    """Disjoint, sorted half-open intervals ``[lo, hi)`` of slot ordinals proven complete."""

    def __init__(self) -> None:
        self._iv: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self._iv)

    def __repr__(self) -> str:
        return f"Coverage({self._iv})"

    def add(self, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        merged: list[tuple[int, int]] = []
        for a, b in self._iv:
            if b < lo or a > hi:
                merged.append((a, b))
            else:
                lo, hi = min(lo, a), max(hi, b)
        merged.append((lo, hi))
        self._iv = sorted(merged)

    def total(self) -> int:
        """How many keys are covered."""
        return sum(b - a for a, b in self._iv)

    def missing(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The parts of ``[lo, hi)`` not covered, in ascending order."""
        out: list[tuple[int, int]] = []
        cur = lo
        for a, b in self._iv:
            if b <= cur:
                continue
            if a >= hi:
                break
            if a > cur:
                out.append((cur, min(a, hi)))
            cur = max(cur, b)
            if cur >= hi:
                break
        if cur < hi:
            out.append((cur, hi))
        return out

    def reach_down(self, hi: int) -> int:
        """The lowest ``lo`` with ``[lo, hi)`` covered without a hole (``hi`` if ``hi-1`` isn't)."""
        for a, b in self._iv:
            if a < hi <= b:
                return a
        return hi
