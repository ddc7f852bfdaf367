"""`lora-rffi demo --quick` runs the whole tour (each step a real `lora-rffi` process) and its summary agrees
with the files it wrote."""

from __future__ import annotations

import json
import pathlib

import pytest

from lorarffi.cli import main
from lorarffi.cli.demo import QUICK, _sustainable_speed
from lorarffi.live.truth import read_jsonl


def test_sustainable_speed_leaves_half_the_measured_headroom() -> None:
    assert _sustainable_speed(8.0) == 4.0
    assert _sustainable_speed(0.3) == 0.25  # slower than real time: still a pace, never zero
    assert _sustainable_speed(100.0) == 10.0
    assert _sustainable_speed(None) == 1.0 and _sustainable_speed(float("nan")) == 1.0


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["live"] == result["live"] and saved["closed_set"] == result["closed_set"]
    assert all(pathlib.Path(p).exists() for p in result["files"].values())
    assert result["enrollment"]["weights_unchanged"] is True
    enrolled = [d["device_id"] for d in result["enrollment"]["enrolled"]]
    later = [d["device_id"] for d in result["enrollment"]["enrolled_later"]]
    assert enrolled == list(range(1, QUICK.n_trained + 1))
    assert later == list(range(QUICK.n_trained + 1, QUICK.n_devices + 1))
    live = result["live"]
    truth = read_jsonl(out / "truth.jsonl")
    decisions = [r for r in read_jsonl(out / "decisions.jsonl") if "start" in r]
    # the live step ran at a pace the machine keeps: nothing lost, every decision accounted for
    assert live["n_lost_samples"] == 0 and live["n_overflows"] == 0
    assert live["truth"]["n_transmitted"] == len(truth)
    assert live["truth"]["n_decided"] + live["truth"]["n_spurious"] == len(decisions)
    assert {r["device"] for r in truth if r["is_rogue"]} == {QUICK.n_devices + 1, QUICK.n_devices + 2}
    caught, total = live["rogue_caught"]
    assert 0 <= caught <= total
    assert 0.0 <= result["closed_set"]["accuracy_cnn"] <= 1.0
