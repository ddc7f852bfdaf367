"""The package layering holds: cli -> live -> rffi | capture -> datasets | sim -> dsp -> errors.

Every module's imports are read with :mod:`ast` (lazy imports inside functions included); an import of a
lora-rffi subpackage that its own subpackage may not use fails the test.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "lorarffi"

# For each subpackage, the lora-rffi subpackages it may import besides itself (``lorarffi.errors`` and the
# top-level ``lorarffi`` version are leaves anyone may import).
BELOW_DATA = {"dsp"}
ALLOWED: dict[str, set[str]] = {
    "dsp": set(),
    "datasets": set(BELOW_DATA),
    "sim": set(BELOW_DATA),
    "capture": BELOW_DATA | {"datasets", "sim"},
    "rffi": BELOW_DATA | {"datasets", "sim"},
    "live": BELOW_DATA | {"datasets", "sim", "capture", "rffi"},
    "cli": BELOW_DATA | {"datasets", "sim", "capture", "rffi", "live"},
}
LEAVES = {"errors", "__version__"}


def imported_modules(path: pathlib.Path) -> list[str]:
    """Absolute module names imported anywhere in ``path`` (``from X import a`` gives ``X`` and ``X.a``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def layering_violations(pkg: pathlib.Path) -> list[str]:
    """Every import in the package tree at ``pkg`` that points the wrong way: one ``"module imports name"``
    per module and wrongly imported subpackage."""
    found = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).parts
        if len(rel) == 1:  # top-level leaves: __init__, errors, __main__
            continue
        own = rel[0]
        seen: set[str] = set()
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] != pkg.name or len(parts) == 1 or parts[1] in LEAVES:
                continue
            target = parts[1]
            if own not in ALLOWED:
                found.append(f"{path.relative_to(pkg)} is in no known layer")
                break
            if target != own and target not in ALLOWED[own] and target not in seen:
                seen.add(target)
                found.append(f"{path.relative_to(pkg)} imports {name}")
    return found


def test_every_subpackage_has_a_layer() -> None:
    subpackages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert subpackages == set(ALLOWED)


def test_module_imports_point_down_the_pipeline() -> None:
    assert layering_violations(PKG) == []


def _fake_package(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    pkg = root / "lorarffi"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


@pytest.mark.parametrize(
    ("module", "text"),
    [
        ("dsp/bad.py", "from lorarffi.rffi.inference import load_classifier\n"),
        ("dsp/bad.py", "def f():\n    import lorarffi.capture.base\n"),  # lazy import in a function
        ("datasets/bad.py", "from lorarffi.sim.channel import add_awgn\n"),  # side by side, not down
        ("rffi/bad.py", "from lorarffi.live.pipeline import LivePipeline\n"),
        ("rffi/bad.py", "from lorarffi.capture import open_source\n"),
        ("capture/bad.py", "from lorarffi import rffi\n"),  # the subpackage named in the import list
        ("live/bad.py", "from lorarffi.cli.common import add_lora_args\n"),
    ],
)
def test_layering_check_catches_a_planted_wrong_arrow(tmp_path: pathlib.Path, module: str, text: str) -> None:
    good = {
        "dsp/ok.py": "from lorarffi.errors import ConfigError\n",
        "cli/ok.py": "from lorarffi.live import pipeline\n",
    }
    pkg = _fake_package(tmp_path, good)
    assert layering_violations(pkg) == []
    pkg = _fake_package(tmp_path, {module: text})
    assert len(layering_violations(pkg)) == 1
    assert layering_violations(pkg)[0].startswith(module)


def test_dsp_imports_no_torch_at_module_level() -> None:
    for path in (PKG / "dsp").rglob("*.py"):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        mods = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        mods += [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module]
        assert not any(m.split(".")[0] == "torch" for m in mods), path
