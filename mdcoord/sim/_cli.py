"""Command-line parsing that a newcomer can act on: the sim's CLI and mdcoord's (the face imports
this, as it imports the exchange; the sim imports nothing from mdcoord, so this is where both can
find it).

- an unknown flag prints this (sub)command's usage and names the flag with the closest known one
  (``unknown option --cuont (did you mean --count?)``), exit 2;
- a bad value is one line naming the flag (``argument --port: must be from 0 to 65535, got
  '-5'``), exit 2 — the usage would only bury it;
- the value types below check ranges at parse time, so a bad value never reaches a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable
from typing import NoReturn

from ._clock import to_utc

__all__ = ["Parser", "iso_time", "at_least", "port"]


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with the errors above; its subparsers are Parsers too."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            self.unknown(message.removeprefix("unrecognized arguments: ").split())
        if message.startswith("argument "):  # a bad value: the message names the flag and the value
            if choice := re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message):
                close = difflib.get_close_matches(choice[1], re.findall(r"'([^']*)'", choice[2]), n=1)
                message += f"; did you mean {close[0]!r}?" if close else ""
            self.exit(2, f"{self.prog}: error: {message}\n")
        super().error(message)  # usage, then the message (a missing argument: the usage shows it)

    def unknown(self, extras: list[str]) -> NoReturn:
        """Exit 2 naming the first of ``extras`` (what parsing left over), with a suggestion."""
        first = next((a for a in extras if a.startswith("-")), extras[0])
        if first.startswith("-"):
            known = [s for action in self._actions for s in action.option_strings]
            close = difflib.get_close_matches(first.split("=", 1)[0], known, n=1)
            problem = f"unknown option {first}" + (f" (did you mean {close[0]}?)" if close else "")
        else:
            problem = f"unexpected argument {first!r}"
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {problem}\n")


def _typed(convert: Callable[[str], object], ok: Callable[[object], bool], what: str) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def at_least(low: float, kind: type[int] | type[float] = int) -> Callable[[str], object]:
    """A number >= ``low`` (``kind`` int or float)."""
    noun = "an integer" if kind is int else "a number"
    return _typed(kind, lambda v: v >= low, f"{noun} >= {low:g}")  # type: ignore[operator]


port = _typed(int, lambda v: 0 <= v <= 65535, "a port from 0 to 65535 (0 = any free port)")  # type: ignore[operator]
iso_time = _typed(to_utc, lambda v: True, "an ISO-8601 time such as 2026-11-24T12:00:00Z")
