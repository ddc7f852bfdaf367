"""Ground truth of the simulated radio: CFO-tuned rogues, the truth file, and decisions scored against it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lorarffi.cli import main
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError
from lorarffi.live.truth import read_jsonl, score_decisions
from lorarffi.sim import Session, StreamSimulator, make_fleet
from lorarffi.sim.session import session_mean_cfo_hz, tuned_to_cfo


def test_tuned_to_cfo_hits_the_target_and_keeps_the_hardware() -> None:
    a, b = make_fleet(2, seed=4, spread=3)
    session = Session(day=2, minutes_since_power_on=5.0)
    times_s = np.linspace(300.0, 900.0, 7)
    target = float(np.mean(session_mean_cfo_hz(a, session, times_s)))
    t = tuned_to_cfo(b, target, session, times_s, device_id=99)
    # the mean CFO is linear in crystal_ppm: exact up to float64 rounding of a few-kHz sum
    assert float(np.mean(session_mean_cfo_hz(t, session, times_s))) == pytest.approx(target, abs=1e-6)
    assert t.device_id == 99
    assert (t.iq_gain_db, t.sweep_coeffs_hz) == (b.iq_gain_db, b.sweep_coeffs_hz)
    assert t.crystal_ppm != b.crystal_ppm


def test_stream_tuned_rogue_sends_with_the_target_cfo() -> None:
    fleet = make_fleet(3, seed=1, spread=3)
    sim = StreamSimulator(fleet, LoRaConfig(), rogues=1, tuned_rogues=[2], seed=7, mean_interval_s=0.05)
    assert [d.device_id for d in sim.rogues] == [4, 5]
    sim.read(6_000_000)
    ev = sim.events
    cfo = {d: np.mean([e.cfo_hz for e in ev if e.device_id == d]) for d in (2, 4, 5)}
    assert all(e.is_rogue == (e.device_id > 3) for e in ev)
    # both send with their session CFO plus per-packet jitter (tens of Hz): the tuned rogue sits on its
    # target, the plain rogue elsewhere
    assert abs(cfo[5] - cfo[2]) < 100.0
    assert abs(cfo[4] - cfo[2]) > 300.0
    with pytest.raises(ConfigError, match="no fleet device with id"):
        StreamSimulator(fleet, LoRaConfig(), tuned_rogues=[9])


def test_in_a_gateway_stream_a_tuned_rogue_uses_its_targets_channel_and_sf() -> None:
    fleet = make_fleet(6, seed=1, spread=3)
    kw = {"channels_hz": (868.1e6, 868.3e6, 868.5e6), "sfs": (7, 8, 9), "center_freq_hz": 868.3e6, "seed": 3}
    plain = StreamSimulator(fleet, LoRaConfig(), rogues=2, **kw)
    sim = StreamSimulator(fleet, LoRaConfig(), rogues=2, tuned_rogues=[1, 4], **kw)
    assert [d.device_id for d in sim.rogues] == [7, 8, 9, 10]
    assert sim.assignments[9] == sim.assignments[1] and sim.assignments[10] == sim.assignments[4]
    # everyone else keeps the assignment drawn without tuned rogues
    assert {d: sim.assignments[d] for d in plain.assignments} == plain.assignments
    sim.read(4_000_000)
    for e in sim.events:
        assert (e.channel_hz, e.sf) == sim.assignments[e.device_id]


def _rec(start: int, device: int | None, verdict: str) -> dict:
    return {"start": start, "device": device, "verdict": verdict}


def test_score_decisions_counts_every_outcome() -> None:
    truth = [
        {"start": 1000, "device": 1, "is_rogue": False},
        {"start": 5000, "device": 1, "is_rogue": False},
        {"start": 9000, "device": 2, "is_rogue": False},
        {"start": 13000, "device": 3, "is_rogue": False},
        {"start": 17000, "device": 7, "is_rogue": True},
        {"start": 21000, "device": 7, "is_rogue": True},
        {"start": 25000, "device": 2, "is_rogue": False},  # never decided
        {"start": 29000, "device": 2, "is_rogue": False, "whole": False},  # cut by the run's end
    ]
    decisions = [
        {"run": "marker"},
        _rec(1003, 1, "accept"),  # correct
        _rec(4990, 2, "accept"),  # wrong device
        _rec(9001, -1, "unknown"),  # rejected
        _rec(13000, 3, "accept"),  # correct
        _rec(17002, -1, "rogue"),  # caught
        _rec(21000, 1, "accept"),  # stranger accepted
        _rec(21005, -1, "rogue"),  # a second decision of one packet: spurious
        _rec(40000, 1, "accept"),  # no packet there: spurious
    ]
    s = score_decisions(decisions, truth, [1, 2, 3], tolerance_samples=16)
    assert (s.n_transmitted, s.n_decided, s.n_missed, s.n_spurious) == (8, 6, 1, 2)
    assert (s.enrolled, s.enrolled_correct, s.enrolled_wrong_device, s.enrolled_rejected) == (4, 2, 1, 1)
    assert (s.strangers, s.strangers_caught, s.strangers_accepted) == (2, 1, 1)
    assert s.false_accepts == 2 and s.accuracy == 0.5 and s.caught_rate == 0.5
    assert s.per_sender[7] == {"caught": 1, "accepted": 1}
    d = s.to_dict()
    assert d["accuracy"] == 0.5 and json.dumps(d)
    empty = score_decisions([], truth, [1], tolerance_samples=0).to_dict()
    assert empty["accuracy"] is None and empty["n_missed"] == 7


def test_live_sim_writes_truth_that_matches_its_detections(tmp_path, capsys) -> None:
    truth, dec = tmp_path / "truth.jsonl", tmp_path / "dec.jsonl"
    rc = main(
        [
            "live", "--source", "sim", "--devices", "3", "--rogues-tuned-to", "1", "--seed", "2",
            "--snr-db", "20", "--duration-s", "3", "--speed", "0", "--no-view",
            "--sim-truth", str(truth), "--jsonl", str(dec),
        ]
    )  # fmt: skip
    assert rc == 0
    t = read_jsonl(truth)
    assert t and {r["device"] for r in t} <= {1, 2, 3, 4}
    assert all(r["is_rogue"] == (r["device"] == 4) for r in t)
    cfg = LoRaConfig()
    s = score_decisions(read_jsonl(dec), t, [1, 2, 3], tolerance_samples=cfg.samples_per_symbol)
    # at 20 dB the detector finds every whole packet; one cut by the end of the run may be missed
    assert s.n_spurious == 0 and s.n_missed == 0
    assert s.n_decided >= sum(r["whole"] for r in t)
    assert all(r["start"] + r["n_samples"] <= 3_000_000 for r in t if r["whole"])


def test_truth_flags_need_the_simulated_radio(tmp_path, capsys) -> None:
    rec = tmp_path / "x.cf32"
    np.zeros(1000, np.complex64).tofile(rec)
    rc = main(["live", "--source", f"file:{rec}", "--fs-hz", "1e6", "--sim-truth", str(tmp_path / "t")])
    assert rc == 2
    assert "--source sim" in capsys.readouterr().err
