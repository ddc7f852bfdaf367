"""Every notebook runs top to bottom in a real Jupyter kernel (nbclient, the ``python3`` kernel of this
interpreter), and every code cell asserts what it shows against ground truth (the simulator's, or what the
shared data's notes state), so a wrong figure fails here. Notebooks are generated from notebooks/src/ and
stored without outputs."""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600  # a hung cell fails the test instead of hanging the suite


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::nbformat.warnings.MissingIDFieldWarning")  # ids are added on execution
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_a_kernel(path: pathlib.Path, tmp_path, monkeypatch) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the suite runs two test processes on two cores
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' temporary models go where pytest cleans up
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",  # jupyter_client starts it with sys.executable: this venv's interpreter
        resources={"metadata": {"path": str(path.parent)}},  # the notebook's folder, as Jupyter would
    )
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name}: {e}", pytrace=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


def test_notebook_kernel_is_this_interpreter() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    # jupyter_client replaces a bare "python" with sys.executable when it starts the kernel
    assert spec.argv[0] in {"python", "python3", sys.executable}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_code_cell_checks_what_it_shows(path: pathlib.Path) -> None:
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells
    for i, cell in enumerate(cells):
        checks = [line for line in cell["source"] if line.lstrip().startswith("assert ")]
        assert checks, f"{path.name}: code cell {i} asserts nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path: pathlib.Path) -> None:
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells)


def test_the_issue_s_notebooks_exist() -> None:
    names = {p.stem for p in NOTEBOOKS}
    wanted = {"01_quickstart", "02_cfo_drift_and_hybrid", "03_enrollment_and_rogues", "04_real_recordings"}
    assert wanted <= names


def test_notebooks_are_generated_from_their_sources() -> None:
    import importlib.util

    tool = ROOT / "tools" / "make_notebook.py"
    spec = importlib.util.spec_from_file_location("make_notebook", tool)
    make_notebook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_notebook)
    assert NOTEBOOKS, "no notebooks found"
    for nb in NOTEBOOKS:
        src = nb.parent / "src" / (nb.stem + ".py")
        assert src.exists(), f"{nb.name} has no source script in notebooks/src/"
        cells = make_notebook.cells_from_script(src.read_text())
        assert json.loads(nb.read_text())["cells"] == cells, f"{nb.name} is stale: run tools/make_notebook.py"
