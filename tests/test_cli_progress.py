"""Progress of the long jobs: each command advances its bar by exactly the work it announced (simulate's
packets, the detector's samples in detect and in recordings given to classify, the network's packets of
evaluate, classify, enroll and authenticate), the bar writes to stderr only (stdout stays parseable JSON),
and it is off without a terminal or with ``--no-progress`` / ``-q``."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pathlib

import pytest
import torch

from lorarffi.cli import main
from lorarffi.cli import progress as progress_mod

N_PACKETS = 8  # per device


@pytest.fixture()
def bars(monkeypatch) -> list[dict]:
    """Every bar a command opens: its description, total and the sum of its advances."""
    opened: list[dict] = []

    @contextlib.contextmanager
    def recording_bar(description, total, *, enabled):
        bar = {"description": description, "total": total, "done": 0, "enabled": enabled}
        opened.append(bar)

        def advance(n: int) -> None:
            bar["done"] += n

        yield advance

    monkeypatch.setattr(progress_mod, "progress_bar", recording_bar)
    return opened


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> pathlib.Path:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("progress")
    sim = ["-q", "simulate", "--n-devices", "3", "--packets", str(N_PACKETS), "--seed", "4", "--spread", "3"]
    assert main([*sim, "--out", str(d / "data.h5")]) == 0
    train = ["-q", "train", str(d / "data.h5"), "--out", str(d / "model"), "--model", "rffi_net"]
    train += ["--epochs", "1", "--objective", "triplet", "--batch-size", "8", "--threads", "1"]
    train += ["--members", "1"]
    assert main([*train, "--no-progress"]) == 0
    rec = ["-q", "simulate", "--stream", str(d / "rec.sigmf-meta"), "--n-devices", "2", "--duration-s", "1"]
    assert main([*rec, "--seed", "2"]) == 0
    return d


def test_every_long_job_advances_to_its_total(
    files: pathlib.Path, bars: list[dict], tmp_path: pathlib.Path, capsys
) -> None:
    model, data = str(files / "model"), str(files / "data.h5")
    reg = str(tmp_path / "r.db")
    commands = [
        ["simulate", "--n-devices", "2", "--packets", "5", "-o", str(tmp_path / "s.h5")],
        ["evaluate", model, data, "--json"],
        ["classify", model, data, "--json"],
        ["enroll", model, data, "--registry", reg, "--devices", "1-2"],
        ["authenticate", model, data, "--registry", reg, "--json"],
        ["classify", model, str(files / "rec.sigmf-meta"), "--json"],
        ["detect", str(files / "rec.sigmf-meta"), "--json"],
    ]
    for argv in commands:
        assert main(["-q", *argv]) == 0, argv
    capsys.readouterr()
    got = [(b["description"], b["total"], b["done"]) for b in bars]
    n = 3 * N_PACKETS
    assert got[:5] == [
        ("simulate", 10, 10),
        ("evaluate", n, n),
        ("classify", n, n),
        ("enroll", 2 * N_PACKETS, 2 * N_PACKETS),
        ("authenticate", n, n),
    ]
    # a recording: the detector's samples, then the network's packets
    (detect, classify, detect_command) = got[5:]
    assert detect[0] == "detect" and detect[1] == detect[2] > 0
    assert classify[0] == "classify" and classify[1] == classify[2] > 0
    assert detect_command == detect  # `detect` reads the same samples
    # quiet (-q) runs never show a bar
    assert not any(b["enabled"] for b in bars)


def test_bar_goes_to_stderr_and_stdout_stays_json(files: pathlib.Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(progress_mod, "progress_enabled", lambda args: True)
    assert main(["classify", str(files / "model"), str(files / "data.h5"), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 * N_PACKETS + 1 and all(isinstance(json.loads(line), dict) for line in out)


def test_the_bar_itself_writes_to_stderr_only(monkeypatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    with progress_mod.progress_bar("work", 4, enabled=True) as advance:
        for _ in range(4):
            advance(1)
    assert out.getvalue() == ""
    with progress_mod.progress_bar("work", 4, enabled=False) as advance:
        advance(4)
    assert out.getvalue() == ""


def test_shown_only_on_a_terminal_without_opt_outs(monkeypatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    def args(**kw) -> argparse.Namespace:
        return argparse.Namespace(**{"no_progress": False, "quiet": False, **kw})

    monkeypatch.setattr("sys.stderr", Tty())
    assert progress_mod.progress_enabled(args())
    assert not progress_mod.progress_enabled(args(no_progress=True))
    assert not progress_mod.progress_enabled(args(quiet=True))
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    assert not progress_mod.progress_enabled(args())
