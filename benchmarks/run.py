"""Run the benchmarks and write their results into docs/benchmarks.md.

Each ``benchmarks/bench_*.py`` defines ``run() -> str`` returning a Markdown section (tables, the command that
reproduces it, and whether each target was met, with the measured number). Sections live in
docs/benchmarks.md between ``<!-- bench:NAME -->`` markers, so running one benchmark
(``python benchmarks/run.py --only spectrogram``) replaces its section and keeps the others.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import pathlib
import platform
import re
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"


def machine_header() -> str:
    import numpy
    import scipy

    try:
        import torch

        torch_v = torch.__version__
    except ImportError:  # pragma: no cover
        torch_v = "absent"
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return (
        f"Machine: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"numpy {numpy.__version__}, "
        f"scipy {scipy.__version__}, torch {torch_v}."
    )


def _load(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(module)
    return module


def _splice(doc: str, name: str, body: str) -> str:
    block = f"<!-- bench:{name} -->\n{body.strip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    if pattern.search(doc):
        return pattern.sub(lambda _m: block, doc)
    return doc.rstrip() + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="benchmark names (file stem without bench_)")
    args = parser.parse_args(argv)
    files = sorted(HERE.glob("bench_*.py"))
    if args.only:
        files = [f for f in files if f.stem[len("bench_") :] in set(args.only)]
    doc = (
        DOC.read_text() if DOC.exists() else "# Benchmarks\n\nWritten by `make bench` (benchmarks/run.py).\n"
    )
    for path in files:
        name = path.stem[len("bench_") :]
        print(f"== {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        body = _load(path).run()
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        section = f"## {name}\n\n_{stamp}; {time.perf_counter() - t0:.0f} s. {machine_header()}_\n\n{body}"
        doc = _splice(doc, name, section)
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
