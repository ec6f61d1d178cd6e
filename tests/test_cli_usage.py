"""What a newcomer trips on at the command line (issue 11.7): an --out that cannot be written, a
typo'd flag, a bad value, a narrow terminal. In-process through ``main()`` (the same entry point
as ``python -m``), against the session exchange; one subprocess proves the module entry."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import mdcoord
from mdcoord.__main__ import _write, main
from mdcoord.sim import Exchange
from mdcoord.sim.__main__ import main as sim_main


def _exit_code(argv: list[str], entry=main) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exited:
        entry(argv)
    return int(exited.value.code)  # type: ignore[arg-type]


@pytest.mark.parametrize("out", ["/nonexistent/dir/x.csv", "{tmp}/x.txt", "{tmp}"])
def test_an_out_that_cannot_be_written_fails_before_any_request(
    out: str, ex: Exchange, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = out.format(tmp=tmp_path)
    code = main(["candles", "KRW-BTC", "1m", "--count", "5", "--out", out, "--base-url", ex.base_url, "--no-cache"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"error: --out {out!r}") and err.count("\n") == 1, err
    assert ex.count() == 0


def test_out_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "x.csv"
    target.write_text("the previous dataset\n")

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot format")

        __repr__ = __str__

    broken = pd.DataFrame({"a": range(5000), "b": [1] * 4999 + [Unprintable()]})  # fails mid-file
    with pytest.raises(RuntimeError):
        _write(broken, str(target))
    assert target.read_text() == "the previous dataset\n"
    _write(pd.DataFrame({"a": [1, 2]}), str(target))
    assert pd.read_csv(target, index_col=0)["a"].tolist() == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]  # no temp file left behind


def test_a_typod_flag_is_named_with_a_suggestion_under_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["candles", "KRW-BTC", "1m", "--cuont", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m mdcoord candles")
    assert err.splitlines()[-1] == "python -m mdcoord candles: error: unknown option --cuont (did you mean --count?)"
    assert _exit_code(["--prot", "8080"], sim_main) == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("unknown option --prot (did you mean --port?)")
    assert _exit_code(["candels", "KRW-BTC", "1m"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("did you mean 'candles'?")


@pytest.mark.parametrize(
    "argv",
    ["demo --latency -1", "demo --seed x", "demo --count 0", "sim --now notadate", "sim --port -5", "sim --seed x",
     "sim --rate-limit -1"],
)
def test_a_bad_value_is_one_line_naming_the_flag(argv: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(argv.split()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: argument " + argv.split()[1] in err, err


def test_a_taken_port_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert sim_main(["--port", str(taken.getsockname()[1])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m mdcoord.sim: error: cannot serve on 127.0.0.1:") and err.count("\n") == 1


def test_the_module_entry_gives_one_line_not_a_traceback() -> None:
    out = subprocess.run([sys.executable, "-m", "mdcoord.sim", "--now", "notadate"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr


def test_cache_info_prints_every_column(exchange: Exchange, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mdcoord.candles("KRW-BTC", "1h", count=5, base_url=exchange.base_url, cache=True, cache_dir=str(tmp_path))
    with mdcoord.set_options(cache_dir=str(tmp_path)), pd.option_context("display.max_columns", 3, "display.width", 40):
        assert main(["cache", "info"]) == 0  # as a narrow terminal would show it
    out = capsys.readouterr().out
    assert "..." not in out
    for column in mdcoord.cache.info(tmp_path).reset_index().columns:
        assert column in out
