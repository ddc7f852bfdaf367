"""Every notebook runs top to bottom (code cells executed in order, Agg backend, no Jupyter needed), and every
code cell asserts what it shows against the simulator's ground truth, so a wrong figure fails here."""

from __future__ import annotations

import json
import pathlib

import matplotlib
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: pathlib.Path, tmp_path, monkeypatch) -> None:
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    nb = json.loads(path.read_text())
    namespace: dict = {"__name__": "__notebook__"}
    for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        code = "".join(cell["source"])
        exec(compile(code, f"{path.name}[cell {i}]", "exec"), namespace)  # noqa: S102


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_code_cell_checks_what_it_shows(path: pathlib.Path) -> None:
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells
    for i, cell in enumerate(cells):
        checks = [line for line in cell["source"] if line.lstrip().startswith("assert ")]
        assert checks, f"{path.name}: code cell {i} asserts nothing"


def test_notebooks_are_generated_from_their_sources() -> None:
    import importlib.util

    tool = pathlib.Path(__file__).resolve().parents[1] / "tools" / "make_notebook.py"
    spec = importlib.util.spec_from_file_location("make_notebook", tool)
    make_notebook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_notebook)
    assert NOTEBOOKS, "no notebooks found"
    for nb in NOTEBOOKS:
        src = nb.parent / "src" / (nb.stem + ".py")
        assert src.exists(), f"{nb.name} has no source script in notebooks/src/"
        cells = make_notebook.cells_from_script(src.read_text())
        assert json.loads(nb.read_text())["cells"] == cells, f"{nb.name} is stale: run tools/make_notebook.py"
