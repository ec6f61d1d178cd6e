"""The layering docs/design.md states is the layering the code has (issue 11, item 4).

docs/design.md's table assigns every module of ``mdcoord/`` to a layer (0 foundation ... 4 face);
a module imports only from its own layer or the ones below, the embedded exchange
(``mdcoord/sim/``) imports nothing from the rest of mdcoord, and nothing below the face imports
the exchange. The table is read from the document itself, so the two cannot drift apart: a new
module must be placed in it, and an import against the direction fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mdcoord"
DESIGN = ROOT / "docs" / "design.md"
FACE = 4


def layers_from_design() -> dict[str, int]:
    """``{module file name: layer}`` from the table of docs/design.md (rows ``| N name | `a.py`, ... |``)."""
    layers: dict[str, int] = {}
    for line in DESIGN.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*(\d)\s+[^|]*\|([^|]*)\|", line)
        if m:
            for name in re.findall(r"`([\w.]+\.py)`", m.group(2)):
                assert name not in layers, f"{name} is in two rows of the layer table"
                layers[name] = int(m.group(1))
    return layers


def imports_of(path: Path, package: Path = PACKAGE) -> set[str]:
    """The mdcoord modules ``path`` imports (``_client``, ``sim``...), at any depth of the file
    (lazy imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and path.parent == package:
                found.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
            elif node.module and node.module.startswith("mdcoord."):
                found.add(node.module.split(".")[1])
            elif node.module == "mdcoord":
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mdcoord."))
    return found


def _core_files() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def test_every_module_has_a_layer() -> None:
    layers = layers_from_design()
    files = {p.name for p in _core_files()}
    assert sorted(files - set(layers)) == [], "modules missing from docs/design.md's layer table"
    assert sorted(set(layers) - files) == [], "docs/design.md's layer table names modules that do not exist"


def upward_imports(path: Path, layers: dict[str, int], package: Path = PACKAGE) -> list[str]:
    """The imports of ``path`` that go against the layering."""
    mine = layers[path.name]
    against = []
    for module in imports_of(path, package):
        if module == "sim":
            if mine < FACE:
                against.append("sim (the embedded exchange is for the face only: CLI demo and sim command)")
            continue
        target = f"{module}.py"
        if target not in layers and (PACKAGE / module).is_dir():
            continue
        if layers.get(target, -1) > mine:
            against.append(f"{module} (layer {layers[target]})")
    return against


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: p.name)
def test_imports_go_down_the_layers(path: Path) -> None:
    layers = layers_from_design()
    against = upward_imports(path, layers)
    assert not against, f"{path.name} (layer {layers[path.name]}) imports from above: {against}"


def test_the_embedded_exchange_imports_nothing_of_mdcoord() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in sorted((PACKAGE / "sim").rglob("*.py"))
                 if imports_of(p) - {"sim"}]
    assert not offenders, offenders


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check can fail: a lazy import of the face (or of the exchange) from the client is seen."""
    text = (PACKAGE / "_client.py").read_text(encoding="utf-8")
    probe = tmp_path / "_client.py"
    probe.write_text(text + "\n\ndef _x():\n    from ._api import candles\n    from .sim import Exchange\n",
                     encoding="utf-8")
    against = upward_imports(probe, layers_from_design(), package=tmp_path)
    assert any(a.startswith("_api") for a in against) and any(a.startswith("sim") for a in against)
