"""Every command example of the README and the user guides runs, with small data, and exits 0.

Which blocks run: every fenced ```bash block of README.md, docs/guide-*.md and docs/troubleshooting.md, and
any block of another docs/*.md fenced as ```bash runnable. A block that cannot run here says why on its
first line, a comment starting ``# needs`` (``# needs a radio``): it is skipped by that rule, and each file
may hold at most :data:`MAX_SKIPPED` of them.

How they run: each file's blocks run in order, in one fresh folder laid out like a checkout (the shared
recordings at ``../shared``), so a later command finds what an earlier one wrote. ``lora-rffi`` commands run
in-process; ``SoapySDRUtil`` and ``python`` as subprocesses; ``make`` targets are the Makefile's (run by
``make demo`` / ``make test`` themselves, not from here); ``.``/``source``/``cd``/``export`` set up a shell
and are skipped. Any other program fails the test, so no example goes unchecked by accident.

Small data (the rules that make the commands quick; the commands are otherwise run as written):

- ``lora-rffi train`` runs 1 epoch (``--epochs 1``);
- ``--packets N`` (a count, as in ``simulate``) is capped at 20;
- packet ranges ``A:B`` (``--packets``, ``--enroll-packets``, ``--legit-packets``, ``--rogue-packets``) are
  divided by :data:`RANGE_SCALE`, as the public dataset's stand-ins hold fewer packets;
- ``--duration-s`` is capped at 3 s;
- files under ``data/`` (the public LoRa_RFFI dataset's layout, docs/guide-offline.md) are stand-ins made
  from the simulator in the public layout, with the real files' names and device ids and a few packets
  per device (enough for the scaled packet ranges).
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MAX_SKIPPED = 3
RANGE_SCALE = 5
MAX_COUNT_PACKETS = 20
MAX_DURATION_S = 3.0
RANGE_FLAGS = ("--packets", "--enroll-packets", "--legit-packets", "--rogue-packets")
SHELL_SETUP = {".", "source", "cd", "export"}
MAKE_TARGETS = {"demo", "test", "bench", "lint", "install"}

# The public dataset's files (Shen et al., IEEE DataPort), as its stand-ins hold them: device ids and packets
# per device (enough for the packet ranges the docs name, divided by RANGE_SCALE; docs/guide-offline.md lists
# the real files).
PUBLIC_STANDINS = {
    "Train/dataset_training_aug.h5": (range(1, 31), 20),
    "Train/dataset_training_no_aug.h5": (range(1, 31), 20),
    "Test/dataset_seen_devices.h5": (range(1, 31), 10),
    "Test/dataset_residential.h5": (range(31, 41), 40),
    "Test/dataset_rogue.h5": (range(41, 46), 40),
    "Test/dataset_other_device_type.h5": (range(46, 61), 10),
    "Test/channel_problem/A.h5": (range(31, 41), 40),
}


def _doc_files() -> list[pathlib.Path]:
    docs = ROOT / "docs"
    return [ROOT / "README.md", *sorted(docs.glob("guide-*.md")), docs / "troubleshooting.md"]


def _blocks(path: pathlib.Path, *, every_bash: bool) -> list[tuple[int, str]]:
    """(line number, text) of the file's runnable-language blocks (```bash, or ```bash runnable)."""
    out, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\S*)\s*(.*)$", lines[i])
        if not m:
            i += 1
            continue
        lang, rest = m.group(2), m.group(3)
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            j += 1
        wanted = lang in ("bash", "sh") and (every_bash or "runnable" in rest.split())
        if wanted:
            out.append((i + 1, "\n".join(lines[i + 1 : j])))
        i = j + 1
    return out


def _all_blocks() -> list[tuple[pathlib.Path, int, str]]:
    found = [(p, n, b) for p in _doc_files() if p.exists() for n, b in _blocks(p, every_bash=True)]
    mine = set(_doc_files())
    for p in sorted((ROOT / "docs").glob("*.md")):
        if p not in mine:
            found += [(p, n, b) for n, b in _blocks(p, every_bash=False)]
    return found


def _needs(block: str) -> str | None:
    first = next((line.strip() for line in block.splitlines() if line.strip()), "")
    return first[2:] if first.startswith("# needs") else None


def _commands(block: str) -> list[list[str]]:
    """The block's commands as argv lists (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", block)
    cmds = []
    for line in text.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            cmds.append(argv)
    return cmds


def _scaled(argv: list[str]) -> list[str]:
    """``lora-rffi`` argv with the module docstring's small-data rules applied."""
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        v = out[i + 1]
        if a in RANGE_FLAGS and ":" in v:
            lo, hi = (int(x) // RANGE_SCALE if x else None for x in v.split(":"))
            out[i + 1] = f"{'' if lo is None else lo}:{'' if hi is None else hi}"
        elif a == "--packets" and v.isdigit():
            out[i + 1] = str(min(int(v), MAX_COUNT_PACKETS))
        elif a == "--duration-s":
            out[i + 1] = f"{min(float(v), MAX_DURATION_S):g}"
    if len(out) > 1 and out[1] == "train":
        out = _without(out, "--epochs") + ["--epochs", "1"]
    return out


def _without(argv: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(f"{flag}="):
            out.append(a)
    return out


def _write_public_standins(root: pathlib.Path) -> None:
    """The PUBLIC_STANDINS files under ``root``: simulated preambles in the public layout."""
    import h5py

    from lorarffi.dsp import LoRaConfig
    from lorarffi.sim import Session, make_fleet, simulate_preamble_set

    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    fleet = make_fleet(60, seed=0, spread=3.0)
    for k, (name, (devices, n)) in enumerate(PUBLIC_STANDINS.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        s = simulate_preamble_set(
            [fleet[d - 1] for d in devices],
            cfg,
            n,
            session=Session(day=1 if name.startswith("Train") else 2, place=1 + k),
            rng=np.random.default_rng(k),
            multipath=False,
        )
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=np.concatenate([s.preambles.real, s.preambles.imag], axis=1))
            f.create_dataset("label", data=s.device_ids[None, :].astype(np.float64))


def _run(argv: list[str], where: str, capsys) -> None:
    from lorarffi.cli import main

    prog = argv[0]
    if prog in SHELL_SETUP or (prog == "make" and set(argv[1:]) <= MAKE_TARGETS):
        return
    if prog == "lora-rffi":
        argv = _scaled(argv)
        capsys.readouterr()
        try:
            code = main(argv[1:])
        except SystemExit as e:  # --help, and argparse's usage errors
            code = e.code
        out, err = capsys.readouterr()
        assert code == 0, f"{where}: {shlex.join(argv)} exited {code}\n{err[-2000:]}"
        if "--json" in argv:
            for line in out.splitlines():
                json.loads(line)  # stdout holds JSON only (records and the summary)
        return
    if prog in ("SoapySDRUtil", "python", "python3"):
        exe = [sys.executable] if prog.startswith("python") else [prog]
        res = subprocess.run([*exe, *argv[1:]], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, (
            f"{where}: {shlex.join(argv)} exited {res.returncode}\n{res.stderr[-2000:]}"
        )
        return
    pytest.fail(f"{where}: {prog!r} has no rule here: mark the block '# needs ...' or add a rule")


def _files_with_blocks() -> list[pathlib.Path]:
    return sorted({p for p, _, _ in _all_blocks()})


@pytest.mark.slow
@pytest.mark.parametrize("doc", _files_with_blocks(), ids=lambda p: p.name)
def test_every_command_example_runs(doc, tmp_path, monkeypatch, capsys, request) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("LORA_RFFI_CONFIG", raising=False)
    blocks = [(n, b) for p, n, b in _all_blocks() if p == doc]
    if any("replay" in b for _, b in blocks if _needs(b) is None):  # the SoapySDR replay module, built once
        replay_library = request.getfixturevalue("replay_library")
        monkeypatch.setenv("SOAPY_SDR_PLUGIN_PATH", str(replay_library.parent))
    if any("data/" in b for _, b in blocks if _needs(b) is None):
        _write_public_standins(repo / "data")
    ran = 0
    for line, block in blocks:
        if _needs(block) is not None:
            continue
        for argv in _commands(block):
            _run(argv, f"{doc.name}:{line}", capsys)
            ran += 1
    assert ran, f"{doc.name}: no command ran"


def test_few_blocks_are_skipped_and_each_says_why() -> None:
    skipped: dict[str, int] = {}
    for p, _, b in _all_blocks():
        reason = _needs(b)
        if reason is not None:
            assert len(reason.split()) >= 2, f"{p.name}: '# needs' must say what is needed"
            skipped[p.name] = skipped.get(p.name, 0) + 1
    assert all(n <= MAX_SKIPPED for n in skipped.values()), skipped


def test_the_readme_and_every_guide_have_runnable_examples() -> None:
    for p in _doc_files():
        assert p.exists(), f"{p} is missing"
        assert any(_needs(b) is None for _, b in _blocks(p, every_bash=True)), f"{p.name}: nothing runs"


def test_small_data_rules() -> None:
    argv = ["lora-rffi", "train", "x.h5", "--packets", "0:100", "--epochs", "60", "--out", "m"]
    assert _scaled(argv) == ["lora-rffi", "train", "x.h5", "--packets", "0:20", "--out", "m", "--epochs", "1"]
    assert _scaled(["lora-rffi", "simulate", "--packets", "150", "--duration-s", "30"])[2:] == [
        "--packets",
        "20",
        "--duration-s",
        "3",
    ]
    assert _scaled(["lora-rffi", "rogue", "--rogue-packets", "100:"])[-1] == "20:"
    assert _commands("# c\nlora-rffi a \\\n  --b 1  # note\n\n. x") == [
        ["lora-rffi", "a", "--b", "1"],
        [".", "x"],
    ]
    assert _needs("\n# needs a radio\nlora-rffi live") == "needs a radio"
    assert _needs("lora-rffi live  # needs a radio") is None


def test_which_blocks_run(tmp_path) -> None:
    md = tmp_path / "x.md"
    md.write_text(
        "```bash\nlora-rffi a\n```\n```text\nlora-rffi b\n```\n```bash runnable\nlora-rffi c\n```\n"
    )
    assert [b for _, b in _blocks(md, every_bash=True)] == ["lora-rffi a", "lora-rffi c"]
    assert [b for _, b in _blocks(md, every_bash=False)] == ["lora-rffi c"]


def test_the_readme_benchmark_figures_are_the_measured_ones() -> None:
    """Every accuracy, AUC and EER the README's Benchmarks and Limits sections quote stands in
    docs/benchmarks.md (written by benchmarks/run.py), and the figures of one README table row stand in one
    row there, so a re-run that changes them shows up here."""
    readme = (ROOT / "README.md").read_text()
    measured = (ROOT / "docs" / "benchmarks.md").read_text().replace(" %", "%")
    quoted = readme[readme.index("## Benchmarks") : readme.index("## Notebooks")]

    def figures(text: str) -> set[str]:
        return {f.replace(" ", "") for f in re.findall(r"\b\d+\.\d\d ?%|\b0\.\d{4}\b", text)}

    assert len(figures(quoted)) >= 15
    missing = sorted(f for f in figures(quoted) if f not in measured)
    assert not missing, f"README quotes figures docs/benchmarks.md does not hold: {missing}"
    rows = [line for line in quoted.splitlines() if line.startswith("|") and figures(line)]
    assert len(rows) >= 4
    for row in rows:
        assert any(figures(row) <= figures(line) for line in measured.splitlines()), (
            f"README row {row!r}: its figures are not one row of docs/benchmarks.md"
        )
