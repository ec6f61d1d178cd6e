"""Only the typed errors of the tree leave the public API (issue 11, item 2).

Every ``raise`` in the library raises a subclass of ``MdcoordError`` (or re-raises one), except
where Python's own protocols ask for another class: a pandas accessor that does not fit a frame
raises ``AttributeError`` (that is how pandas hides it), and a missing optional extra raises
``ImportError``. A test reads the source for that; the others trigger the errors that used to be
raw (``ValueError`` from the accessor, a bare ``MdcoordError`` from the runtime).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

import mdcoord
from mdcoord import _exceptions
from mdcoord.sim import Exchange

LIBRARY = Path(__file__).resolve().parents[1] / "mdcoord"
TREE = {name for name in _exceptions.__all__ if name != "MdcoordError"}
# (module, class): raised where a Python protocol wants that class, not ours
PROTOCOL = {("_accessor.py", "AttributeError"), ("_plot.py", "ImportError")}


def _raised(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else "?"
            if name[:1].isupper():  # a class made here (lower case: a call returning an error to re-raise)
                out.append((node.lineno, name))
    return out


def test_every_raise_is_a_class_of_the_tree() -> None:
    strays = [
        f"{p.name}:{line} raises {name}"
        for p in sorted(LIBRARY.glob("*.py"))
        for line, name in _raised(p)
        if name not in TREE and (p.name, name) not in PROTOCOL
    ]
    assert not strays, "raw or bare errors can escape the public API:\n" + "\n".join(strays)


def test_a_frame_whose_timeframe_cannot_be_told_is_a_typed_error() -> None:
    one = pd.DataFrame({c: [1.0] for c in ("open", "high", "low", "close", "volume")},
                       index=pd.DatetimeIndex([pd.Timestamp("2026-11-20", tz="UTC")], name="time"))
    with pytest.raises(mdcoord.InvalidRequestError, match=r"df.attrs\['mdcoord'\] = \{'timeframe': '1m'\}"):
        one.mdc.fill()
    one.attrs["mdcoord"] = {"timeframe": "1d"}  # the way the message names works
    assert len(one.mdc.fill()) == 1


def test_update_of_a_frame_without_its_market_is_a_typed_error(ex: Exchange) -> None:
    df = mdcoord.candles("KRW-BTC", "1m", count=5, base_url=ex.base_url)
    df.attrs = {}
    with pytest.raises(mdcoord.InvalidRequestError, match="update.. needs to know the market"):
        df.mdc.update(base_url=ex.base_url)


def test_the_sync_api_on_mdcoords_own_loop_is_a_typed_error(ex: Exchange) -> None:
    from mdcoord._runtime import get_runtime

    async def inner() -> None:
        mdcoord.candles("KRW-BTC", "1m", count=5, base_url=ex.base_url)

    with pytest.raises(mdcoord.InvalidRequestError, match="await its async twin"):
        get_runtime().run(get_runtime().arun(inner()))
