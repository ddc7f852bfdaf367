"""The CFO gate: statistics, which devices it rules out, renormalisation, rejection, drift tracking.

Most cases here use tolerances in Hz; the ppm form, the weight floor and re-acquisition are in
test_rffi_gate_ppm.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorarffi.errors import ConfigError
from lorarffi.rffi.hybrid import CfoGate, GateParams

# The plain Gaussian weighting (300 Hz drift allowance, no floor) and moving-average tracking only.
GAUSSIAN = {"cfo_weight_std_hz": 300.0, "cfo_weight_floor": 0.0, "reacquire_packets": 0}


@pytest.fixture()
def gate() -> CfoGate:
    rng = np.random.default_rng(1)
    means = np.array([-3000.0, 0.0, 400.0, 5000.0])
    cfo = np.concatenate([m + rng.normal(0, 20, 200) for m in means])
    cls = np.repeat(np.arange(4), 200)
    return CfoGate.fit(cfo, cls, device_ids=[11, 12, 13, 14], params=GateParams(margin_hz=300.0, k_sigma=4.0))


def test_fit_learns_each_devices_statistics(gate: CfoGate) -> None:
    # Statistical bounds for 200 draws of N(mean, 20 Hz): the sample mean's std is 20/sqrt(200) = 1.4 Hz (5 Hz
    # is 3.5 sigma), the sample std's relative std is 1/sqrt(2 * 199) = 5 % (20 % is 4 sigma).
    np.testing.assert_allclose(gate.mean_hz, [-3000, 0, 400, 5000], atol=5)
    np.testing.assert_allclose(gate.std_hz, 20, rtol=0.2)
    assert np.all(gate.min_hz < gate.mean_hz) and np.all(gate.max_hz > gate.mean_hz)
    # lambda = max(k sigma, half range) + margin: the half range of 200 Gaussian draws is about 2.7 sigma.
    half = np.maximum(gate.max_hz - gate.mean_hz, gate.mean_hz - gate.min_hz)
    np.testing.assert_allclose(gate.lambda_hz, np.maximum(4 * gate.std_hz, half) + 300.0)


def test_gate_rules_out_exactly_the_devices_whose_interval_excludes_the_cfo(gate: CfoGate) -> None:
    lam = gate.lambda_hz
    cfo = np.array([0.0, 200.0, -3000.0 + lam[0] + 1, 5000.0 - lam[3] + 1, 2500.0])
    allowed = gate.allowed(cfo)
    expected = np.abs(cfo[:, None] - gate.mean_hz[None, :]) <= lam[None, :]
    np.testing.assert_array_equal(allowed, expected)
    assert allowed[0].tolist() == [False, True, False, False]
    assert allowed[1].tolist() == [False, True, True, False]  # between two devices: both stay possible
    assert allowed[2].tolist() == [False, False, False, False]
    assert allowed[3].tolist() == [False, False, False, True]


def test_a_cfo_exactly_lambda_from_the_centre_stays_allowed() -> None:
    # The window is closed: |f - c| <= lambda. Training CFOs 950 and 1050 Hz give centre 1000 Hz, half range
    # 50 Hz; with k_sigma 0 and margin 100 Hz, lambda = 150 Hz. All of it is exact in float64 (integers), so
    # 850 and 1150 Hz sit exactly on the edge.
    g = CfoGate.fit(
        [950.0, 1050.0, 5000.0, 5000.0], [0, 0, 1, 1], [1, 2], GateParams(k_sigma=0.0, margin_hz=100.0)
    )
    assert g.center_hz[0] == 1000.0 and g.lambda_hz[0] == 150.0
    edge = [850.0, 1150.0]
    outside = [np.nextafter(850.0, 0.0), np.nextafter(1150.0, 2000.0)]
    assert g.allowed(edge)[:, 0].tolist() == [True, True]
    assert g.allowed(outside)[:, 0].tolist() == [False, False]
    res = g.apply(np.zeros((4, 2)), edge + outside)
    assert res.index.tolist() == [0, 0, -1, -1]


def test_apply_renormalises_the_remaining_probabilities_and_rejects_when_all_are_out(gate: CfoGate) -> None:
    gate.params = dataclasses.replace(gate.params, cfo_weighting=False)  # Algorithm 1 as published
    logits = np.log(np.array([[0.7, 0.1, 0.15, 0.05], [0.7, 0.1, 0.15, 0.05], [0.7, 0.1, 0.15, 0.05]]))
    res = gate.apply(logits, [200.0, 0.0, 2500.0])
    # Packet 0: devices 12 and 13 possible -> 0.1 / 0.25 and 0.15 / 0.25. (Probabilities and confidences are
    # float64 results rounded to float32: within 2^-24 = 6e-8 relative, far inside the tolerances here.)
    np.testing.assert_allclose(res.probs[0], [0, 0.4, 0.6, 0], atol=1e-6)
    assert res.index[0] == 2 and res.confidence[0] == pytest.approx(0.6)
    # Packet 1: only device 12 left -> certainty, although the CNN preferred device 11.
    assert res.index[1] == 1 and res.confidence[1] == pytest.approx(1.0)
    # Packet 2: every device ruled out -> rejected, probabilities all zero, never silently assigned.
    assert res.index[2] == -1 and res.rejected.tolist() == [False, False, True]
    assert res.confidence[2] == 0 and not res.probs[2].any()


def test_apply_survives_extreme_logits(gate: CfoGate) -> None:
    logits = np.array([[1000.0, -1000.0, -1000.0, -1000.0]])
    res = gate.apply(logits, [0.0])  # the CNN's favourite (device 11) is ruled out; device 12 is left
    assert res.index[0] == 1 and np.isfinite(res.probs).all() and res.confidence[0] == pytest.approx(1.0)


@settings(max_examples=25, deadline=None)
@given(
    cfo=st.lists(st.floats(-9000, 9000), min_size=1, max_size=8),
    seed=st.integers(0, 1000),
    weighting=st.booleans(),
)
def test_gated_prediction_is_the_best_allowed_device(cfo: list[float], seed: int, weighting: bool) -> None:
    g = CfoGate.fit(
        [-3000, -2990, 0, 10, 400, 420, 5000, 5010],
        [0, 0, 1, 1, 2, 2, 3, 3],
        [1, 2, 3, 4],
        GateParams(margin_hz=500.0, cfo_weighting=weighting),
    )
    logits = np.random.default_rng(seed).normal(size=(len(cfo), 4))
    res = g.apply(logits, cfo)
    ok = g.allowed(cfo)
    # With weighting the score of a device is its logit plus the log of its CFO weight, written out here:
    # the default drift allowance 0.1 ppm of 868.1 MHz and the default floor 0.05.
    s2 = np.maximum(g.std_hz, g.tracked_std_hz) ** 2 + 86.81**2
    weight = np.exp(-0.5 * (np.asarray(cfo)[:, None] - g.center_hz[None, :]) ** 2 / s2) + 0.05
    score = logits + (np.log(weight) if weighting else 0.0)
    for i in range(len(cfo)):
        if ok[i].any():
            assert res.index[i] == np.flatnonzero(ok[i])[np.argmax(score[i, ok[i]])]
            assert res.probs[i].sum() == pytest.approx(1.0, abs=1e-5)
            assert not res.probs[i, ~ok[i]].any()  # weighting never brings a ruled-out device back
        else:
            assert res.index[i] == -1


def test_cfo_weighting_prefers_the_device_whose_cfo_fits_when_the_cnn_is_unsure() -> None:
    # Two devices 400 Hz apart, both inside the window of a packet at device 2's centre; the CNN leans to
    # device 1 (0.55 / 0.45). Algorithm 1 follows the CNN; the weighting follows the CFO.
    g = CfoGate.fit(
        [-10.0, 10.0, 390.0, 410.0], [0, 0, 1, 1], [1, 2], GateParams(margin_hz=1000.0, **GAUSSIAN)
    )
    logits = np.log([[0.55, 0.45]])
    on = g.apply(logits, [400.0])
    g.params = dataclasses.replace(g.params, cfo_weighting=False)
    off = g.apply(logits, [400.0])
    assert off.index[0] == 0 and off.confidence[0] == pytest.approx(0.55)
    # Reference: s^2 = 10^2 + 300^2, device 1 is 400 Hz away -> weight exp(-400^2 / (2 s^2)) = 0.4148.
    w = np.exp(-(400.0**2) / (2 * (10.0**2 + 300.0**2)))
    assert on.index[0] == 1
    np.testing.assert_allclose(on.probs[0], np.array([0.55 * w, 0.45]) / (0.55 * w + 0.45), rtol=1e-5)
    np.testing.assert_array_equal(on.allowed, off.allowed)


def test_cfo_weighting_follows_the_tracked_centre() -> None:
    g = CfoGate.fit([0.0, 2.0, 600.0, 602.0], [0, 0, 1, 1], [1, 2], GateParams(margin_hz=1000.0, **GAUSSIAN))
    before = g.cfo_log_likelihood([301.0])[0]
    assert before[0] == pytest.approx(before[1], rel=1e-3)  # half way: no preference
    g.update([300.0] * 400, [0] * 400, [1.0] * 400)  # device 1 drifts up to 300 Hz
    after = g.cfo_log_likelihood([301.0])[0]
    assert after[0] > after[1] and abs(g.center_hz[0] - 300.0) < 5


def test_drift_tracking_follows_a_slow_cfo_ramp_and_off_rejects() -> None:
    g0 = CfoGate.fit(
        np.r_[np.zeros(100) + np.linspace(-10, 10, 100), 3000 + np.linspace(-10, 10, 100)],
        np.repeat([0, 1], 100),
        [1, 2],
        GateParams(margin_hz=100.0, track_alpha=0.05, max_step_hz=5.0, track_min_confidence=0.5),
    )
    ramp = np.linspace(0, 800, 800)  # device 1 drifts by 1 Hz per packet: far beyond lambda (110 Hz)
    logits = np.tile([3.0, 0.0], (1, 1))
    results = {}
    for tracking in (True, False):
        g = g0.copy()
        g.set_tracking(tracking)
        rejected = 0
        for f in ramp:
            res = g.apply(logits, [f])
            g.update([f], res.index, res.confidence)
            rejected += int(res.index[0] < 0)
        results[tracking] = (rejected, g.center_hz[0])
    assert results[True][0] == 0 and abs(results[True][1] - 800) < 60
    assert results[False][0] > 500 and results[False][1] == g0.mean_hz[0]
    assert g0.center_hz[0] == g0.mean_hz[0]  # copies are independent


def test_weighted_tracking_follows_a_device_drifting_towards_another_one() -> None:
    # Device 1 drifts 500 Hz towards device 2 (600 Hz away), both inside the window all along, and the CNN is
    # unsure (0.6 / 0.4). Tracking keeps device 1's centre with its packets, so the weighting keeps favouring
    # it: no packet goes to device 2, and device 2's statistics are left alone.
    g = CfoGate.fit(
        np.r_[np.linspace(-10, 10, 100), 600 + np.linspace(-10, 10, 100)],
        np.repeat([0, 1], 100),
        [1, 2],
        GateParams(margin_hz=1000.0, track_min_confidence=0.6, **GAUSSIAN),
    )
    logits = np.log([[0.6, 0.4]])
    wrong = 0
    for f in np.linspace(0, 500, 300):
        res = g.apply(logits, [f])
        g.update([f], res.index, res.confidence)
        wrong += int(res.index[0] != 0)
    assert wrong == 0
    assert g.center_hz[0] > 400 and g.n_updates.tolist() == [300, 0]
    # The limit of the weighting: the same CFO reached in one jump (no tracking yet) goes to device 2, whose
    # centre is nearer, because the CNN's 0.6 does not outweigh the CFO. Algorithm 1 would follow the CNN.
    fresh = CfoGate.fit(
        [-10.0, 10.0, 590.0, 610.0], [0, 0, 1, 1], [1, 2], GateParams(margin_hz=1000.0, **GAUSSIAN)
    )
    assert fresh.apply(logits, [500.0]).index[0] == 1


def test_drift_step_is_bounded_and_low_confidence_packets_are_ignored() -> None:
    g = CfoGate.fit(
        [0.0, 1.0, 1000.0, 1001.0],
        [0, 0, 1, 1],
        [1, 2],
        GateParams(margin_hz=500.0, track_alpha=1.0, max_step_hz=3.0, track_min_confidence=0.9, **GAUSSIAN),
    )
    used = g.update([400.0, 400.0], [0, 0], [0.95, 0.95])
    assert used.tolist() == [2, 0]
    assert g.center_hz[0] == pytest.approx(0.5 + 6.0)  # bounded: 2 packets x 3 Hz
    before = g.center_hz.copy()
    g.update([300.0], [0], [0.5])  # not confident enough
    g.update([300.0], [-1], [1.0])  # rejected packets never update
    np.testing.assert_array_equal(g.center_hz, before)


def test_state_round_trips_through_a_dict(gate: CfoGate) -> None:
    gate.update([10.0] * 5, [1] * 5, [1.0] * 5)
    back = CfoGate.from_dict(gate.to_dict())
    np.testing.assert_array_equal(back.center_hz, gate.center_hz)
    np.testing.assert_array_equal(back.lambda_hz, gate.lambda_hz)
    assert back.params == gate.params and back.n_updates.tolist() == gate.n_updates.tolist()


def test_gate_saved_before_cfo_weighting_existed_loads_with_it_on() -> None:
    d = {
        "k_sigma": 4.0,
        "margin_hz": 1000.0,
        "tracking": True,
        "track_alpha": 0.02,
        "max_step_hz": 10.0,
        "track_min_confidence": 0.9,
    }  # as saved then
    p = GateParams.from_dict(d)
    assert p.cfo_weighting and p.cfo_weight_std_hz == 300.0 and p.cfo_weight_floor == 0.0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match="margin_hz=-1"):
        GateParams(margin_hz=-1)
    with pytest.raises(ConfigError, match="track_alpha=0"):
        GateParams(track_alpha=0)
    with pytest.raises(ConfigError, match="cfo_weight_std_hz=0"):
        GateParams(cfo_weight_std_hz=0)
    with pytest.raises(ConfigError, match="no training packets for device"):
        CfoGate.fit([1.0, 2.0], [0, 0], [5, 6])
