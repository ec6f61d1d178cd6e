"""The documentation is tested: every example runs, every reference is complete, every link resolves.

- Every ```python block of README.md and docs/*.md runs against the embedded exchange, each
  file's blocks in order in one namespace (like doctest), with top-level ``await`` allowed.
  The examples are written as a user writes them against the real API; the test only presets
  ``mdcoord.set_options(base_url=<the embedded exchange>, cache_dir=<a fresh directory per
  file>)``, so ``mdcoord.candles(...)`` in a doc reaches 127.0.0.1. A failure names the doc and
  the line (the code is compiled with the doc's own line numbers).
- Every ``python -m mdcoord ...`` command in a ```bash block is a valid command: the data and
  cache commands run for real (in a temporary directory), ``demo`` runs its own exchange, and
  ``sim`` (which serves until Ctrl-C) has its arguments parsed.
- docs/api.md has an entry for every name in ``mdcoord.__all__``, every public ``df.mdc``
  member and every ``mdcoord.cache`` function, and names every parameter and option; docs/errors.md
  draws the exception tree exactly as the classes are built.
- Every relative link (and ``#anchor``) in README.md and docs/*.md points at something that exists.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import inspect
import io
import os
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")  # df.mdc.plot() in the docs draws off-screen

import mdcoord  # noqa: E402
from mdcoord._accessor import CandleAccessor  # noqa: E402
from mdcoord.sim import Exchange  # noqa: E402

# Dask's own use of a pandas API that pandas 3.1 deprecates (the Dask recipe of docs/cache.md)
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index")

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
API = ROOT / "docs" / "api.md"
ERRORS = ROOT / "docs" / "errors.md"

_FENCE = re.compile(r"^( {0,3})(```+|~~~+)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str  # the fence's info string, e.g. "python" or "bash"
    code: str

    @property
    def lang(self) -> str:
        return self.info.split()[0] if self.info else ""

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the line of each opening fence."""
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m.group(1)), m.group(2), m.group(3)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path.relative_to(ROOT)}:{i + 1}: code fence never closed")
        out.append(Block(path, i + 1, info, "\n".join(body) + "\n"))
        i = j + 1
    return out


ALL_BLOCKS = [b for doc in DOCS for b in fenced_blocks(doc)]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "python" and "no-test" not in b.info.split()]
BASH_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("bash", "sh", "shell", "console")]


# -- running the examples ------------------------------------------------------------------------------
@dataclass
class DocRun:
    """One doc file's examples: a shared namespace, a cache directory, how far they have run."""

    cache_dir: Path
    namespace: dict[str, Any] = field(default_factory=lambda: {"__name__": "__doc_example__"})
    done: int = 0  # blocks run so far (in order)
    broken: str | None = None  # the first block that failed


def _compile(block: Block) -> Any:
    # Blank lines in front make tracebacks point at the doc's own line numbers.
    source = "\n" * block.line + block.code
    return compile(source, str(block.path.relative_to(ROOT)), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def run_block(block: Block, namespace: dict[str, Any]) -> None:
    """Run one block in ``namespace``; a block with top-level ``await`` runs in a fresh event loop
    (as in a notebook cell, where the sync API is called from inside a running loop too)."""
    code = _compile(block)
    if code.co_flags & inspect.CO_COROUTINE:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(eval(code, namespace))  # noqa: S307 - our own docs
        finally:
            loop.close()
    else:
        exec(code, namespace)  # noqa: S102 - our own docs


@pytest.fixture(scope="module")
def doc_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, DocRun]:
    return {doc: DocRun(tmp_path_factory.mktemp(doc.stem + "-cache")) for doc in DOCS}


@contextlib.contextmanager
def preset(exchange: Exchange, cache_dir: Path) -> Iterator[None]:
    """What the test changes for a doc's examples: the exchange they reach and where they cache."""
    with mdcoord.set_options(base_url=exchange.base_url, cache=True, cache_dir=str(cache_dir), progress=False):
        yield


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.name for b in PYTHON_BLOCKS])
def test_python_example_runs(block: Block, doc_runs: dict[Path, DocRun], ex: Exchange) -> None:
    run = doc_runs[block.path]
    blocks = [b for b in PYTHON_BLOCKS if b.path == block.path]
    index = blocks.index(block)
    with preset(ex, run.cache_dir):
        # The blocks before this one set up its names (run them if this block runs alone).
        while run.done < index:
            if run.broken is not None:
                pytest.fail(f"an earlier example of this doc failed ({run.broken}); fix that one first")
            earlier = blocks[run.done]
            try:
                run_block(earlier, run.namespace)
            except BaseException:
                run.broken = earlier.name
                raise
            run.done += 1
        if run.done > index:  # already ran as another block's prerequisite
            return
        try:
            run_block(block, run.namespace)
        except BaseException:
            run.broken = block.name
            raise
        finally:
            _close_figures()
        run.done += 1


def _close_figures() -> None:
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def test_there_are_examples_and_none_escapes_the_test() -> None:
    assert len(PYTHON_BLOCKS) >= 30  # the docs are example-driven; losing many at once is a mistake
    # A block fenced as py, python3, pycon, ipython... would silently escape the examples test.
    pythonish = [b.name for b in ALL_BLOCKS if "py" in b.lang and b.lang != "python"]
    assert not pythonish, f"fence Python examples as ```python so they are tested: {pythonish}"
    untested = [b.name for b in ALL_BLOCKS if b.lang == "python" and b not in PYTHON_BLOCKS]
    assert not untested, f"examples marked no-test (each needs a reason here): {untested}"


# -- the commands shown ------------------------------------------------------------------------------
def mdcoord_commands() -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of every ``python -m mdcoord[.sim] ...`` in a shell block (each distinct
    command once, named by its first appearance)."""
    out: list[tuple[str, list[str]]] = []
    for block in BASH_BLOCKS:
        for k, line in enumerate(block.code.splitlines()):
            for part in re.split(r"&&|\|\||;|\|", line.split(" #")[0]):
                words = shlex.split(part)
                argv = [words[2], *words[3:]] if words[:2] == ["python", "-m"] and len(words) > 2 else []
                if argv and argv[0].startswith("mdcoord") and argv not in [c[1] for c in out]:
                    out.append((f"{block.name}+{k + 1}", argv))
    return out


COMMANDS = mdcoord_commands()


@pytest.mark.parametrize("argv", [c[1] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_shown_command_is_valid(argv: list[str], ex: Exchange, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mdcoord.__main__ import main
    from mdcoord.sim.__main__ import parse_args

    module, args = argv[0], argv[1:]
    if module == "mdcoord.sim" or args[:1] == ["sim"]:  # serves until Ctrl-C: check the arguments only
        parse_args(args if module == "mdcoord.sim" else args[1:])
        return
    assert module == "mdcoord", argv
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with preset(ex, tmp_path / "cache"), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    assert code == 0, err.getvalue()
    if "--out" in args:
        assert (tmp_path / args[args.index("--out") + 1]).stat().st_size > 0


def test_commands_are_found() -> None:
    subcommands = {a[1] for a in (c[1] for c in COMMANDS) if a[0] == "mdcoord" and len(a) > 1}
    assert {"candles", "tickers", "orderbooks", "trades", "cache", "sim", "demo"} <= subcommands


# -- the API reference is complete -------------------------------------------------------------------
def _sections(path: Path) -> list[tuple[str, str]]:
    """``(heading, body)`` of every heading of a Markdown file (code blocks are not headings)."""
    sections: list[tuple[str, list[str]]] = []
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        if not in_code and re.match(r"^#{1,6} ", line):
            sections.append((line, []))
        elif sections:
            sections[-1][1].append(line)
    return [(h, "\n".join(body)) for h, body in sections]


def _entry(qualified: str, sections: list[tuple[str, str]]) -> str | None:
    """The body of the section whose heading names ``qualified`` in code, e.g. `mdcoord.candles`,
    `df.mdc.resample(timeframe)` or `python -m mdcoord cache`."""
    pattern = re.compile(rf"`{re.escape(qualified)}(?:\(.*?\))?`")
    for heading, body in sections:
        if pattern.search(heading):
            return body
    return None


def _public_members(cls: type) -> list[str]:
    return sorted(n for n in dir(cls) if not n.startswith("_"))


def test_api_reference_has_an_entry_for_every_public_name() -> None:
    sections = _sections(API)
    missing = [f"mdcoord.{n}" for n in mdcoord.__all__ if _entry(f"mdcoord.{n}", sections) is None]
    missing += [f"df.mdc.{n}" for n in _public_members(CandleAccessor) if _entry(f"df.mdc.{n}", sections) is None]
    missing += [f"mdcoord.cache.{n}" for n in mdcoord.cache.__all__ if _entry(f"mdcoord.cache.{n}", sections) is None]
    assert not missing, f"docs/api.md has no heading for {missing}"


def test_api_reference_names_nothing_that_does_not_exist() -> None:
    stale = []
    for heading, _ in _sections(API):
        for dotted in re.findall(r"`(mdcoord(?:\.\w+)+)", heading):
            obj: Any = mdcoord
            for part in dotted.split(".")[1:]:
                if not hasattr(obj, part):
                    stale.append(dotted)
                    break
                obj = getattr(obj, part)
        for member in re.findall(r"`df\.mdc\.(\w+)", heading):
            if not hasattr(CandleAccessor, member):
                stale.append(f"df.mdc.{member}")
    assert not stale, f"docs/api.md documents names that do not exist: {stale}"


def _named(param: str, body: str) -> bool:
    """True if ``body`` names ``param`` in code: `start`, `start=`, `**options`..."""
    return re.search(rf"`\**{re.escape(param)}\b", body) is not None


def _parameters(obj: Any) -> list[str]:
    target = obj.create if obj is mdcoord.CoordinatorRequest else obj
    params = inspect.signature(target).parameters.values()
    return [p.name for p in params if p.name not in ("self", "cls")]


def test_api_reference_names_every_parameter() -> None:
    sections = _sections(API)
    unnamed = []
    for name in mdcoord.__all__:
        obj = getattr(mdcoord, name)
        if not (inspect.isfunction(obj) or name in ("Coordinator", "CoordinatorRequest", "RetryPolicy", "set_options")):
            continue
        body = _entry(f"mdcoord.{name}", sections) or ""
        unnamed += [f"{name}({p})" for p in _parameters(obj) if not _named(p, body)]
    for name in ("gaps", "validate", "fill", "resample", "to_kst", "plot", "update"):
        body = _entry(f"df.mdc.{name}", sections) or ""
        unnamed += [f"df.mdc.{name}({p})" for p in _parameters(getattr(CandleAccessor, name)) if not _named(p, body)]
    for name in mdcoord.cache.__all__:
        body = _entry(f"mdcoord.cache.{name}", sections) or ""
        unnamed += [f"cache.{name}({p})" for p in _parameters(getattr(mdcoord.cache, name)) if not _named(p, body)]
    assert not unnamed, f"docs/api.md does not describe these parameters: {unnamed}"


@pytest.mark.parametrize("cls", [mdcoord.Options, mdcoord.CoordinatorMetadata], ids=lambda c: c.__name__)
def test_api_reference_names_every_field(cls: type) -> None:
    body = _entry(f"mdcoord.{cls.__name__}", _sections(API)) or ""
    unnamed = [f.name for f in dataclasses.fields(cls) if f"`{f.name}`" not in body]
    assert not unnamed, f"the {cls.__name__} entry of docs/api.md lacks {unnamed}"


def test_api_reference_lists_every_enum_value() -> None:
    sections = _sections(API)
    for enum_cls in (mdcoord.Timeframe, mdcoord.DataType, mdcoord.SplitStrategy):
        body = _entry(f"mdcoord.{enum_cls.__name__}", sections) or ""
        absent = [m.value for m in enum_cls if f"`{m.value}`" not in body and f'"{m.value}"' not in body]
        assert not absent, f"the {enum_cls.__name__} entry of docs/api.md lacks {absent}"


def _help(argv: list[str]) -> str:
    from mdcoord.__main__ import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return out.getvalue()


def test_api_reference_has_every_command_and_flag() -> None:
    sections = _sections(API)
    common = next(body for heading, body in sections if heading == "## Command line")
    subcommands = re.search(r"\{([\w,]+)\}", _help([])).group(1).split(",")  # type: ignore[union-attr]
    assert "candles" in subcommands
    unnamed = []
    for sub in subcommands:
        body = _entry(f"python -m mdcoord {sub}", sections)
        if body is None:
            unnamed.append(sub)
            continue
        flags = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", _help([sub]))) - {"--help"}
        unnamed += [f"{sub} {f}" for f in sorted(flags) if f"`{f}" not in body + common and f"[{f}" not in body]
    assert not unnamed, f"docs/api.md does not describe these commands or flags: {unnamed}"


# -- the exception tree ------------------------------------------------------------------------------
def _drawn_tree(path: Path) -> dict[str, tuple[str | None, bool]]:
    """``{class: (parent, drawn retryable)}`` from the first tree drawing (├── / └──) of ``path``."""
    block = next(b for b in fenced_blocks(path) if "├──" in b.code)
    tree: dict[str, tuple[str | None, bool]] = {}
    stack: list[tuple[int, str]] = []  # (depth, name)
    for line in block.code.splitlines():
        m = re.match(r"^([│ ]*)(?:[├└]── )?(\w+)(.*)$", line)
        if not m or not m.group(2).endswith("Error"):
            continue
        depth = len(m.group(1)) // 4 + (1 if "──" in line else 0)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        tree[m.group(2)] = (stack[-1][1] if stack else None, "(R)" in m.group(3))
        stack.append((depth, m.group(2)))
    return tree


def test_errors_doc_draws_the_exception_tree_as_built() -> None:
    errors = {n: getattr(mdcoord, n) for n in mdcoord.__all__ if n.endswith("Error")}
    built = {}
    for name, cls in errors.items():
        parents = [b.__name__ for b in cls.__bases__ if b.__name__ in errors]
        built[name] = (parents[0] if parents else None, cls.retryable)
    assert _drawn_tree(ERRORS) == built


# -- links -------------------------------------------------------------------------------------------
def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"^#+\s*", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading, _ in _sections(path):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(path: Path) -> list[tuple[int, str]]:
    out = []
    in_code = False
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            out += [(k, t) for t in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", re.sub(r"`[^`]*`", "", line))]
    return out


def test_relative_links_resolve() -> None:
    broken = []
    checked = 0
    for doc in DOCS:
        for line, target in _links(doc):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            checked += 1
            file_part, _, anchor = target.partition("#")
            dest = (doc.parent / file_part).resolve() if file_part else doc
            where = f"{doc.relative_to(ROOT)}:{line}: {target}"
            if not dest.exists():
                broken.append(where)
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(where + " (no such heading)")
    assert checked >= 20
    assert not broken, "broken links:\n" + "\n".join(broken)
