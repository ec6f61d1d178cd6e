"""One worker process of ``bench_budget_processes``: ``python -m benchmarks._budget_worker SPEC``.

SPEC is JSON: ``market``, ``count``, ``base_url``, ``options`` (extra ``mdcoord.candles``
keywords; none for the defaults), ``frame`` (where to pickle the result). The worker imports
mdcoord and pandas, prints ``ready``, then reads one line from stdin — the common start, a
``time.monotonic()`` value (CLOCK_MONOTONIC: one clock for every process of the host, and the
exchange's log uses it too) — sleeps until then, fetches, pickles the frame and prints one JSON
line: when it began and ended (same clock), the error if any, and its ``attrs["mdcoord"]``.
Only mdcoord and pandas are imported here, so the barrier waits for no benchmark machinery.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    import pandas as pd  # noqa: F401  (imported before the barrier, as a user's script would)

    import mdcoord

    print("ready", flush=True)
    start = float(sys.stdin.readline())
    time.sleep(max(0.0, start - time.monotonic()))
    began = time.monotonic()
    error, df = None, None
    try:
        df = mdcoord.candles(spec["market"], "1m", count=spec["count"], base_url=spec["base_url"], cache=False,
                             progress=False, **spec["options"])
    except mdcoord.MdcoordError as e:
        df, error = getattr(e, "partial", None), f"{type(e).__name__}: {e}"
    ended = time.monotonic()
    meta = dict(df.attrs.get("mdcoord", {})) if df is not None else {}
    if df is not None:
        df.attrs = {}
        df.to_pickle(spec["frame"])
    print(json.dumps({"began": began, "ended": ended, "error": error, "has_frame": df is not None,
                      "meta": meta}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
