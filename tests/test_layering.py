"""The package layering holds: data flows source -> dsp -> rffi -> sink; no import points the wrong way."""

from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "lorarffi"

# For each subpackage, the lora-rffi subpackages it may import (``lorarffi.errors`` and the top-level
# ``lorarffi`` version are leaves anyone may import).
ALLOWED = {
    "dsp": set(),
    "datasets": {"dsp"},
    "capture": {"dsp", "datasets"},
    "rffi": {"dsp", "datasets", "capture"},
}


def _imports(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _all_modules() -> list[pathlib.Path]:
    return sorted(PKG.rglob("*.py"))


@pytest.mark.parametrize("path", _all_modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_module_imports_point_down_the_pipeline(path: pathlib.Path) -> None:
    rel = path.relative_to(PKG).parts
    if len(rel) == 1:  # top-level leaves: __init__, errors, __main__
        return
    own = rel[0]
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] != "lorarffi" or len(parts) == 1 or parts[1] in ("errors", "__version__"):
            continue
        target = parts[1]
        assert target == own or target in ALLOWED[own], f"{path.relative_to(PKG)} imports {name}"


def test_layering_check_catches_a_wrong_arrow(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from lorarffi.rffi.cli import main\n")
    assert "lorarffi.rffi.cli" in _imports(bad)
    assert "rffi" not in ALLOWED["dsp"]


def test_dsp_imports_no_torch_at_module_level() -> None:
    for path in (PKG / "dsp").rglob("*.py"):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        mods = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        mods += [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module]
        assert not any(m.split(".")[0] == "torch" for m in mods), path
