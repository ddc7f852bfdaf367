"""Write a Jupyter notebook from a Python script whose cells are separated by ``# %%`` lines.

``# %% [markdown]`` starts a Markdown cell whose lines are comments (``# text``). Keeps the notebooks in
notebooks/ reviewable as code: ``python tools/make_notebook.py notebooks/src/00_signal_path.py``.
"""

from __future__ import annotations

import json
import pathlib
import sys


def cells_from_script(text: str) -> list[dict]:
    cells: list[dict] = []
    kind, lines = None, []

    def close() -> None:
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            text = body.splitlines()
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in text)
            cells.append({"cell_type": "markdown", "metadata": {}, "source": body.splitlines(keepends=True)})
        else:
            cells.append({"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                          "source": body.splitlines(keepends=True)})

    for line in text.splitlines():
        if line.startswith("# %%"):
            close()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    close()
    return cells


def main(paths: list[str]) -> int:
    for p in paths:
        src = pathlib.Path(p)
        nb = {
            "cells": cells_from_script(src.read_text()),
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        out = src.parent.parent / (src.stem + ".ipynb")
        out.write_text(json.dumps(nb, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
