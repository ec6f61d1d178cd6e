"""The progress bar in a real Jupyter kernel: an ipywidgets bar, or nothing at all.

A notebook shows a widget only if the kernel publishes a ``display_data`` message carrying
``application/vnd.jupyter.widget-view+json``, attributed to the cell that made the call. mdcoord
creates the bar on its own loop thread, so this is checked end to end: a real ipykernel (of this
very environment) runs the calls against the embedded exchange, and the test reads the messages
the kernel publishes, as a notebook frontend would.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager

WIDGET = "application/vnd.jupyter.widget-view+json"

SETUP = """
import mdcoord
from mdcoord.sim import Exchange, SimConfig
ex = Exchange(SimConfig(seed=7, now="2026-11-20T12:34:56Z", frozen=True)).start()
mdcoord.set_options(base_url=ex.base_url, cache=False)
"""


class _ThisEnvironment(KernelSpecManager):
    """The kernel of the running interpreter, whatever kernelspecs are installed elsewhere."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                          display_name="this environment", language="python")


@pytest.fixture(scope="module")
def kernel() -> Iterator[Any]:
    km = KernelManager(kernel_name="this-env", kernel_spec_manager=_ThisEnvironment())
    km.start_kernel()
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        errors = [o for o in _run(client, SETUP) if o["msg_type"] == "error"]
        assert not errors, errors
        yield client
    finally:
        _run(client, "ex.stop()")
        client.stop_channels()
        km.shutdown_kernel(now=True)


def _run(client: Any, code: str) -> list[dict[str, Any]]:
    """Execute ``code`` like a notebook cell; return the outputs published for that cell."""
    msg_id = client.execute(code)
    outputs = []
    while True:
        msg = client.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "status" and msg["content"]["execution_state"] == "idle":
            return outputs
        if kind in ("display_data", "update_display_data", "execute_result", "stream", "error"):
            outputs.append({"msg_type": kind, **msg["content"]})


def _widgets(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in outputs if WIDGET in o.get("data", {})]


def test_progress_true_shows_a_widget_bar(kernel: Any) -> None:
    outputs = _run(kernel, 'df = mdcoord.candles("KRW-BTC", "1m", count=1000, progress=True)\nlen(df)')
    assert _widgets(outputs), f"no widget output; the cell published {outputs}"
    assert not [o for o in outputs if o["msg_type"] in ("stream", "error")], outputs  # no text bar on stderr
    assert outputs[-1]["data"]["text/plain"] == "1000"


def test_progress_default_in_a_notebook_is_the_widget_bar(kernel: Any) -> None:
    outputs = _run(kernel, 'mdcoord.tickers(["KRW-BTC", "KRW-ETH"]).shape')
    assert _widgets(outputs), f"no widget output; the cell published {outputs}"


def test_progress_false_publishes_nothing(kernel: Any) -> None:
    outputs = _run(kernel, 'df = mdcoord.candles("KRW-BTC", "1m", count=1000, progress=False)')
    assert outputs == []
