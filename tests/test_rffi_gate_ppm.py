"""The CFO gate in ppm of the carrier: conversions, a 2 ppm step kept and a 5 ppm stranger rejected, the
weight floor that stops a moved CFO from overruling a confident CNN, re-acquisition, old saved gates, real
devices.

Ground truth: the arithmetic of the rule (module docstring of lorarffi.rffi.hybrid), decisions of the gate as
it was before ppm existed (computed then and kept here as literals), and the CFO statistics of 30 real
transmitters (shared/data/real_cfo_30dev).
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib

import numpy as np
import pytest

from lorarffi.errors import ConfigError
from lorarffi.rffi.hybrid import DEFAULT_CARRIER_HZ, CfoGate, GateParams, hz_to_ppm, ppm_to_hz
from lorarffi.rffi.train import gate_params

REAL_CFO_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "real_cfo_30dev"
CARRIERS_HZ = (433e6, 868.1e6)
# ppm -> Hz is one product with carrier_hz / 1e6 (itself rounded once): within 2 float64 ulps, 2^-51 relative.
CONVERSION_RTOL = 2.0**-51


# -- units --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("carrier_hz", "ppm", "expected_hz"),
    [
        (433e6, 1.0, 433.0),
        (433e6, 2.0, 866.0),
        (433e6, -1.6, -692.8),
        (868.1e6, 1.0, 868.1),
        (868.1e6, -1.6, -1388.96),
        (868.1e6, 2.5, 2170.25),
    ],
)
def test_ppm_and_hz_convert_at_433_and_868_mhz(carrier_hz: float, ppm: float, expected_hz: float) -> None:
    assert float(ppm_to_hz(ppm, carrier_hz)) == pytest.approx(expected_hz, rel=CONVERSION_RTOL)
    assert float(hz_to_ppm(expected_hz, carrier_hz)) == pytest.approx(ppm, rel=2 * CONVERSION_RTOL)


def test_the_same_ppm_is_twice_the_hz_at_twice_the_carrier() -> None:
    low, high = GateParams(carrier_hz=434.05e6), GateParams(carrier_hz=868.1e6)
    assert high.effective_margin_hz == pytest.approx(2 * low.effective_margin_hz, rel=CONVERSION_RTOL)
    assert high.effective_cfo_weight_std_hz == pytest.approx(2 * low.effective_cfo_weight_std_hz, rel=1e-15)
    assert GateParams().effective_carrier_hz == DEFAULT_CARRIER_HZ == 868.1e6
    # Hz stay Hz whatever the carrier.
    assert GateParams(margin_hz=700.0, carrier_hz=433e6).effective_margin_hz == 700.0


def test_each_quantity_is_given_in_hz_or_ppm_never_both() -> None:
    p = GateParams()
    assert (p.margin_hz, p.margin_ppm, p.cfo_weight_std_hz, p.cfo_weight_std_ppm) == (None, 2.5, None, 0.1)
    assert (p.max_step_hz, p.max_step_ppm) == (10.0, None)
    assert GateParams(margin_hz=700.0).margin_ppm is None
    with pytest.raises(ConfigError, match="margin_hz=700.0 and margin_ppm=2.5 are both given"):
        dataclasses.replace(p, margin_hz=700.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"cfo_weight_std_ppm": 0.0},
        {"margin_ppm": -1.0},
        {"max_step_ppm": np.inf},
        {"carrier_hz": 0.0},
        {"cfo_weight_floor": 1.5},
        {"reacquire_packets": -1},
        {"reacquire_packets": 2.0},
    ],
)
def test_bad_new_parameters_are_refused_by_name(bad: dict) -> None:
    ((name, value),) = bad.items()
    with pytest.raises(ConfigError, match=f"{name}={value!r}"):
        GateParams(**bad)


def test_new_parameters_round_trip_and_train_states_the_carrier() -> None:
    p = GateParams(carrier_hz=433e6, margin_ppm=3.0, max_step_ppm=0.02)
    assert GateParams.from_dict(p.to_dict()) == p
    assert gate_params(GateParams(), {"carrier_hz": 433.175e6}).carrier_hz == 433.175e6
    assert gate_params(GateParams(), {}).carrier_hz == DEFAULT_CARRIER_HZ
    assert gate_params(p, {"carrier_hz": 868e6}).carrier_hz == 433e6  # the parameters' own carrier wins


# -- a step kept, a stranger rejected -----------------------------------------------------------------------
def _one_device_gate(carrier_hz: float, params: GateParams | None = None) -> CfoGate:
    """Two devices 30 ppm apart, each trained on CFOs of its mean +-1 Hz (std 1 Hz, half range 1 Hz)."""
    centre = ppm_to_hz(np.array([0.0, 30.0]), carrier_hz)
    cfo = np.repeat(centre, 2) + np.tile([-1.0, 1.0], 2)
    return CfoGate.fit(cfo, [0, 0, 1, 1], [1, 2], params or GateParams(carrier_hz=carrier_hz))


@pytest.mark.parametrize("carrier_hz", CARRIERS_HZ)
def test_a_2_ppm_step_is_kept_and_a_device_5_ppm_away_is_rejected(carrier_hz: float) -> None:
    g = _one_device_gate(carrier_hz)
    # lambda = max(4 std, half range) + 2.5 ppm = 4 Hz + 2.5 ppm; the centre is exactly 0 Hz.
    assert g.lambda_hz[0] == pytest.approx(4.0 + 2.5 * carrier_hz / 1e6, rel=CONVERSION_RTOL)
    step = ppm_to_hz(np.array([-2.0, 2.0, -2.4, 2.4]), carrier_hz)
    res = g.apply(np.zeros((4, 2)), step)
    assert res.index.tolist() == [0, 0, 0, 0]
    far = ppm_to_hz(np.array([-5.0, 5.0, -2.6, 2.6]), carrier_hz)
    res = g.apply(np.zeros((4, 2)), far)
    assert res.rejected.tolist() == [True, True, True, True]


def test_the_1_khz_margin_rejected_a_2_ppm_step_at_868_mhz() -> None:
    # Negative control: the previous default (1000 Hz) loses the device at 868.1 MHz (2 ppm = 1736 Hz) but
    # not at 433 MHz (866 Hz), which is why the tolerance is stated in ppm.
    old = GateParams(margin_hz=1000.0, cfo_weight_std_hz=300.0, cfo_weight_floor=0.0, reacquire_packets=0)
    for carrier_hz, rejected in ((868.1e6, True), (433e6, False)):
        g = _one_device_gate(carrier_hz, old)
        assert g.apply(np.zeros((1, 2)), ppm_to_hz([-2.0], carrier_hz)).rejected[0] == rejected


# -- the weight floor ---------------------------------------------------------------------------------------
def test_the_floor_bounds_what_the_cfo_can_do_to_a_decision() -> None:
    # Device 1 jumped 2 ppm exactly onto device 2's CFO; the CNN says device 1. Without the floor the CFO
    # overrules any CNN (log-likelihood gap (1736 Hz)^2 / (2 s^2), about 200 nats); with floor 0.05 it moves
    # the decision by at most log(1 + 1/0.05) = 3.04 nats: a CNN 0.96 / 0.04 (3.18 nats) keeps device 1,
    # a CNN 0.95 / 0.05 (2.94 nats) does not.
    c1, c2 = 0.0, float(ppm_to_hz(-2.0, 868.1e6))
    train = [c1 - 1, c1 + 1, c2 - 1, c2 + 1]
    g = CfoGate.fit(train, [0, 0, 1, 1], [1, 2], GateParams())
    plain = CfoGate.fit(train, [0, 0, 1, 1], [1, 2], GateParams(cfo_weight_floor=0.0))
    ll = g.cfo_log_likelihood([c2])[0]
    assert ll[1] - ll[0] == pytest.approx(np.log(1 + 1 / 0.05), rel=1e-12)
    sure, unsure = np.log([[0.96, 0.04]]), np.log([[0.95, 0.05]])
    assert g.apply(sure, [c2]).index[0] == 0 and g.apply(unsure, [c2]).index[0] == 1
    assert plain.apply(sure, [c2]).index[0] == 1
    # The renormalised probabilities are the CNN's times (Gaussian + floor), written out.
    s2 = 1.0 + ppm_to_hz(0.1, 868.1e6) ** 2  # training std 1 Hz, drift allowance 0.1 ppm
    w = np.exp(-0.5 * (c2 - np.array([c1, c2])) ** 2 / s2) + 0.05
    expected = np.array([0.96, 0.04]) * w / np.sum(np.array([0.96, 0.04]) * w)
    np.testing.assert_allclose(g.apply(sure, [c2]).probs[0], expected, rtol=2.0**-23)  # float32 output


@pytest.mark.parametrize("carrier_hz", CARRIERS_HZ)
def test_the_cfo_weight_is_the_gaussian_of_spread_and_drift_allowance_plus_the_floor(
    carrier_hz: float,
) -> None:
    # Training CFOs +-3 Hz: std 3 Hz. s^2 = 3^2 + (0.1 ppm)^2; a packet s away weighs exp(-1/2) + 0.05, one at
    # the centre 1 + 0.05. float64 throughout: a few ulps.
    g = CfoGate.fit([-3.0, 3.0, 9e4, 9e4 + 6], [0, 0, 1, 1], [1, 2], GateParams(carrier_hz=carrier_hz))
    s_hz = np.sqrt(9.0 + (0.1 * carrier_hz / 1e6) ** 2)
    assert g.weight_std_hz[0] == pytest.approx(s_hz, rel=1e-14)
    ll = g.cfo_log_likelihood([0.0, s_hz])[:, 0]
    np.testing.assert_allclose(ll, np.log([1.05, np.exp(-0.5) + 0.05]), rtol=1e-13)


def test_a_cfo_that_fits_no_device_leaves_the_cnns_probabilities() -> None:
    # Every device inside the window (2.5 ppm = 2170 Hz) but more than 9 s_k away (s_k = 87 Hz): each
    # Gaussian term is below exp(-40) = 4e-18, under half a float64 ulp of the floor 0.05, so every weight is
    # the floor and the renormalised probabilities are the CNN's (float32 rounding apart).
    g = CfoGate.fit([0.0, 2.0, 500.0, 502.0, 1000.0, 1002.0], [0, 0, 1, 1, 2, 2], [1, 2, 3], GateParams())
    assert (9 * g.weight_std_hz < 800.0).all()
    z = np.log([[0.2, 0.5, 0.3]])
    res = g.apply(z, [-800.0])
    assert res.allowed.all()
    np.testing.assert_allclose(res.probs[0], [0.2, 0.5, 0.3], rtol=2.0**-23)
    assert res.index[0] == 1


# -- re-acquisition -----------------------------------------------------------------------------------------
def _jumped_gate(**kw) -> tuple[CfoGate, float]:
    """Devices at 0 and +10 kHz (868.1 MHz); returns the gate and device 1's CFO after a -2 ppm jump."""
    g = CfoGate.fit([-1.0, 1.0, 9999.0, 10001.0], [0, 0, 1, 1], [1, 2], GateParams(**kw))
    return g, float(ppm_to_hz(-2.0, 868.1e6))


def test_a_device_is_reacquired_after_n_confident_packets_that_agree() -> None:
    g, jumped = _jumped_gate()
    g.update([-150.0, 150.0] * 20, [0] * 40, [0.99] * 40)  # fitting packets widen the tracked spread ...
    assert g.tracked_std_hz[0] > 100.0
    g.center_hz[0] = 0.0  # (they also nudged the centre; put it back for the arithmetic below)
    for i in range(2):
        g.update([jumped + i], [0], [0.99])
        assert g.center_hz[0] == 0.0 and g.reacquire_count[0] == i + 1
    g.update([jumped + 2], [0], [0.99])
    assert g.center_hz[0] == pytest.approx(jumped + 1.0, abs=1e-9) and g.n_reacquired.tolist() == [1, 0]
    assert g.reacquire_count[0] == 0 and g.tracked_std_hz[0] == g.std_hz[0]  # ... which re-acquisition resets
    assert g.center_hz[1] == 10000.0  # the other device is left alone
    # In one batch the same: three packets re-centre, the fourth then fits and feeds the moving average.
    b, _ = _jumped_gate()
    assert b.update([jumped, jumped + 1, jumped + 2, jumped + 3], [0, 0, 0, 0], [0.99] * 4).tolist() == [4, 0]
    assert b.n_reacquired[0] == 1 and b.center_hz[0] == pytest.approx(jumped + 1.0 + 0.02 * 2.0, abs=1e-9)


def test_a_packet_fits_its_device_within_3_weighting_stds() -> None:
    # s = sqrt(1 + 86.81^2) Hz. Packets 2.5 s away fit: the moving average takes them (3 x 0.02 x 2.5 s, under
    # the 10 Hz step bound each) and nothing is re-acquired; packets 3.5 s away do not fit: they count.
    g, _ = _jumped_gate()
    s_hz = float(g.weight_std_hz[0])
    g.update([2.5 * s_hz] * 3, [0] * 3, [0.99] * 3)
    assert g.n_reacquired[0] == 0 and g.reacquire_count[0] == 0
    assert g.center_hz[0] == pytest.approx((1 - 0.98**3) * 2.5 * s_hz, rel=1e-12)
    g.update([-3.5 * s_hz], [0], [0.99])
    assert g.reacquire_count[0] == 1


def test_reacquisition_needs_consecutive_agreeing_confident_accepted_packets() -> None:
    g, jumped = _jumped_gate()
    g.update([jumped, jumped], [0, 0], [0.99, 0.99])
    g.update([0.5], [0], [0.99])  # a packet that fits the old centre: the count starts again
    assert g.reacquire_count[0] == 0
    centre_hz = g.center_hz[0]  # the fitting packet moved it by the moving average
    g.update([jumped, jumped + 500.0], [0, 0], [0.99, 0.99])  # disagreeing CFOs: restart at the second
    assert g.reacquire_count[0] == 1 and g.reacquire_sum_hz[0] == jumped + 500.0
    b, _ = _jumped_gate()  # the same within one batch: the fitting packet resets the count in between
    b.update([jumped, jumped, 0.5, jumped, jumped], [0] * 5, [0.99] * 5)
    assert b.reacquire_count[0] == 2 and b.n_reacquired[0] == 0
    g.update([jumped] * 5, [-1] * 5, [1.0] * 5)  # rejected packets never count
    g.update([jumped] * 5, [0] * 5, [0.5] * 5)  # nor unconfident ones
    assert g.reacquire_count[0] == 1 and g.n_reacquired[0] == 0 and g.center_hz[0] == centre_hz


def test_reacquisition_never_moves_a_device_beyond_its_training_window() -> None:
    g, _ = _jumped_gate()
    beyond = float(g.mean_hz[0] + g.lambda_hz[0] + 1.0)
    g.update([beyond] * 3, [0] * 3, [0.99] * 3)
    assert g.center_hz[0] == 0.0 and g.n_reacquired[0] == 0
    off, jumped = _jumped_gate(reacquire_packets=0)
    off.update([jumped] * 3, [0] * 3, [0.99] * 3)
    assert off.n_reacquired[0] == 0 and off.center_hz[0] == pytest.approx(-30.0)  # moving average: 3 x 10 Hz


def test_reacquisition_state_round_trips_and_reset_forgets_it() -> None:
    g, jumped = _jumped_gate()
    g.update([jumped, jumped], [0, 0], [0.99, 0.99])
    back = CfoGate.from_dict(g.to_dict())
    back.update([jumped], [0], [0.99])
    assert back.n_reacquired[0] == 1  # the two packets before saving counted
    g.reset_tracking()
    assert g.reacquire_count[0] == 0 and g.reacquire_sum_hz[0] == 0.0 and g.center_hz[0] == g.mean_hz[0]


# -- gates saved before ppm existed -------------------------------------------------------------------------
# fmt: off
_LOGITS = [
    [2.0, 0.5, 0.1, -1.0], [0.3, 0.2, 0.0, -0.5], [0.0, 1.0, 0.9, 0.0], [-1.0, 0.4, 0.5, 3.0],
    [0.2, 0.1, 0.6, 0.0], [1.5, 1.4, -2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [3.0, -1.0, 2.9, 0.0],
    [0.1, 2.5, 0.0, 0.2], [-0.5, 0.0, 4.0, 0.0], [0.0, 0.3, 0.0, 0.2], [5.0, 0.0, 0.0, 0.0],
]
_CFO = [-1500.0, 250.0, 200.0, 5300.0, 150.0, -900.0, 3000.0, 600.0, -50.0, 420.0, 7000.0, -2900.0]
_OLD_PARAMS = {"k_sigma": 4.0, "margin_hz": 1000.0, "tracking": True, "track_alpha": 0.02,
               "max_step_hz": 10.0, "track_min_confidence": 0.9, "cfo_weighting": True,
               "cfo_weight_std_hz": 300.0}
# fmt: on
# Decisions of the gate before ppm existed on the inputs above, recorded then: the batch decisions and their
# confidences, the decisions packet by packet with tracking, and the centres and tracked spreads after those
# 12 updates (the same for the two gates with a 1000 Hz margin: no packet was near a window's edge).
_TRACKED_1000HZ = (
    [-2000.0, -1.0000000000000009, 404.32, 5006.0],
    [144.81017459649266, 25.21943694851255, 31.843013592728113, 41.70339714379795],
)
# fmt: off
_OLD = {
    "default": (
        {},
        [0, 2, 1, 3, 2, 1, -1, 2, 1, 2, -1, 0],
        [1.0, 0.505072832107544, 0.5251824855804443, 1.0, 0.5690498948097229, 1.0, 0.0, 0.9965474605560303,
         0.9736062288284302, 0.9931135773658752, 0.0, 1.0],
        [0, 2, 1, 3, 2, 1, -1, 2, 1, 2, -1, 0],
        *_TRACKED_1000HZ,
    ),
    "algorithm1": (
        {"cfo_weighting": False},
        [0, 1, 1, 3, 2, 1, -1, 2, 1, 2, -1, 0],
        [1.0, 0.5498340129852295, 0.5249791741371155, 1.0, 0.622459352016449, 1.0, 0.0, 0.9801596999168396,
         0.9241418242454529, 0.9820137619972229, 0.0, 1.0],
        [0, 1, 1, 3, 2, 0, -1, 2, 1, 2, -1, 0],
        *_TRACKED_1000HZ,
    ),
    "tight": (
        {"margin_hz": 300.0, "cfo_weight_std_hz": 150.0, "track_alpha": 0.5, "max_step_hz": 40.0,
         "track_min_confidence": 0.6},
        [-1, 2, 1, 3, 1, -1, -1, 2, 1, 2, -1, -1],
        [0.0, 0.6589616537094116, 0.5281393527984619, 1.0, 0.595224916934967, 0.0, 0.0, 1.0, 1.0, 1.0,
         0.0, 0.0],
        [-1, 2, 2, 3, 2, -1, -1, 2, 1, 2, -1, -1],
        [-2000.0, -25.0, 410.0, 5040.0],
        [8.16496580927726, 24.748737341529164, 107.68395114098169, 183.8622672908537],
    ),
}
# fmt: on


def _old_state(params: dict) -> dict:
    """A gate state as saved before ppm existed, untracked: the statistics of training CFOs -2010, -1990,
    -2000 / 0, 30, -30 / 400, 380, 420 / 5000, 5004, 4996 Hz."""
    return {
        "params": {**_OLD_PARAMS, **params},
        "device_ids": [11, 12, 13, 14],
        "mean_hz": [-2000.0, 0.0, 400.0, 5000.0],
        "std_hz": [8.16496580927726, 24.49489742783178, 16.32993161855452, 3.265986323710904],
        "min_hz": [-2010.0, -30.0, 380.0, 4996.0],
        "max_hz": [-1990.0, 30.0, 420.0, 5004.0],
        "n_train": [3, 3, 3, 3],
        "center_hz": [-2000.0, 0.0, 400.0, 5000.0],
        "tracked_std_hz": [8.16496580927726, 24.49489742783178, 16.32993161855452, 3.265986323710904],
        "n_updates": [0, 0, 0, 0],
    }


@pytest.mark.parametrize("name", list(_OLD))
def test_a_gate_saved_before_ppm_decides_as_it_did(name: str) -> None:
    params, batch_index, batch_conf, seq_index, centre_hz, spread_hz = _OLD[name]
    g = CfoGate.from_dict(_old_state(params))
    assert g.params.cfo_weight_floor == 0.0 and g.params.reacquire_packets == 0 and g.carrier_hz == 868.1e6
    res = g.apply(_LOGITS, _CFO)
    assert res.index.tolist() == batch_index
    # The same float64 arithmetic as then, rounded to float32: exp/log of another libm may differ by a few
    # float64 ulps, which moves the float32 result by at most one float32 ulp (2^-23 relative).
    np.testing.assert_allclose(res.confidence, batch_conf, rtol=2.0**-23, atol=0)
    seq = []
    for z, f in zip(_LOGITS, _CFO, strict=True):
        r = g.apply([z], [f])
        g.update([f], r.index, r.confidence)
        seq.append(int(r.index[0]))
    assert seq == seq_index
    # 12 updates of about 10 float64 operations on values up to 5e3 Hz: rounding below 120 * 2^-53 * 5e3 Hz
    # = 7e-11 Hz; 1e-9 Hz leaves room for pow/sqrt implementations that differ by a few ulps.
    np.testing.assert_allclose(g.center_hz, centre_hz, rtol=0, atol=1e-9)
    np.testing.assert_allclose(g.tracked_std_hz, spread_hz, rtol=0, atol=1e-9)
    # Negative control: the same statistics under today's defaults decide otherwise.
    new = CfoGate.from_dict({**_old_state(params), "params": GateParams().to_dict()})
    assert new.apply(_LOGITS, _CFO).index.tolist() != batch_index


# -- real devices -------------------------------------------------------------------------------------------
def _real_sessions() -> dict[tuple[int, str], dict[str, float]]:
    path = REAL_CFO_DIR / "cfo_summary.csv"
    if not path.is_file():
        pytest.skip(f"{path} is not there (the real devices' CFO statistics live beside the checkout)")
    with open(path, newline="") as f:
        return {
            (int(r["device"]), r["set"]): {k: float(v) for k, v in r.items() if k != "set"}
            for r in csv.DictReader(f)
        }


def _packets(rows: list[dict[str, float]], n: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """(K, n) CFOs, Hz: frames alternate between each row's first- and second-frame means, the within-frame
    spread being what the per-frame std leaves once the two means' split is taken out; times ``scale``."""
    e1, e2 = np.array([r["e1_mean_hz"] for r in rows]), np.array([r["e2_mean_hz"] for r in rows])
    std = np.array([r["cfo_std_hz"] for r in rows])
    within = np.sqrt(np.maximum(std**2 - ((e2 - e1) / 2) ** 2, 0.01))
    means = np.where(np.arange(n) % 2 == 0, e1[:, None], e2[:, None])
    return scale * (means + within[:, None] * rng.standard_normal((len(rows), n)))


@pytest.mark.parametrize("carrier_hz", CARRIERS_HZ)
def test_real_devices_keep_their_own_gate_through_real_and_2_ppm_shifts(carrier_hz: float) -> None:
    rows = _real_sessions()
    ids = sorted({d for d, _ in rows})
    scale = carrier_hz / 433e6  # the file is at 433 MHz; ppm preserved
    rng = np.random.default_rng(5)
    train = _packets([rows[(d, "train")] for d in ids], 40, scale, rng)
    k = len(ids)
    labels = np.repeat(np.arange(k), 40)
    g = CfoGate.fit(train.reshape(-1), labels, ids, GateParams(carrier_hz=carrier_hz))
    # A confident CNN: the true device 0.97, the others 0.03 / 29 each (6.9 nats above every other one,
    # more than the floor's 3.04 nats).
    logits = np.log(np.where(np.eye(k, dtype=bool)[labels], 0.97, 0.03 / (k - 1)))
    sessions = {
        "another day": _packets([rows[(d, "another")] for d in ids], 40, scale, rng),
        # devices 1, 3, 4 moved 1.55 to 1.81 ppm in the other environment, device 22 a few Hz
        "other environment": _packets(
            [rows.get((d, "nlos"), rows[(d, "another")]) for d in ids], 40, scale, rng
        ),
    }
    for step_ppm in (-2.0, 2.0):
        sessions[f"another day {step_ppm:+} ppm"] = sessions["another day"] + ppm_to_hz(step_ppm, carrier_hz)
    for name, cfo in sessions.items():
        fresh = g.copy()
        res = fresh.apply(logits, cfo.reshape(-1))
        assert res.allowed[np.arange(labels.size), labels].all(), name  # nobody loses their own window
        assert (res.index == labels).all(), name  # nor is misassigned
    # The plain Gaussian weighting (no floor) hands the moved devices to others: 0.1 ppm is 45-90 Hz here,
    # the NLOS steps are 670-790 Hz at 433 MHz.
    plain = CfoGate.fit(
        train.reshape(-1), labels, ids, GateParams(carrier_hz=carrier_hz, cfo_weight_floor=0.0)
    )
    assert (plain.apply(logits, sessions["other environment"].reshape(-1)).index != labels).any()
    # A transmitter 5 ppm above the TCXO cluster (the highest of the devices within 0.5 ppm of zero) is out of
    # every device's window.
    tcxo_top = max(c for c in g.mean_hz if abs(hz_to_ppm(c, carrier_hz)) < 0.5)
    stranger = tcxo_top + ppm_to_hz(5.0, carrier_hz)
    assert g.apply(np.zeros((1, k)), [stranger]).rejected[0]


def test_the_real_cfo_separates_crystal_devices_but_not_the_tcxo_cluster() -> None:
    # When the CFO carries information: a device's CFO identifies it when no other device's mean lies within
    # its fit radius (3 s_k). Crystal devices (README: 1-5, 11-16) are each alone; every TCXO device shares
    # its radius with at least 3 others (4 to 16 with this draw).
    rows = _real_sessions()
    ids = sorted({d for d, _ in rows})
    train = _packets([rows[(d, "train")] for d in ids], 40, 1.0, np.random.default_rng(6))
    g = CfoGate.fit(train.reshape(-1), np.repeat(np.arange(len(ids)), 40), ids, GateParams(carrier_hz=433e6))
    near = np.abs(g.mean_hz[:, None] - g.mean_hz[None, :]) <= 3 * g.weight_std_hz[:, None]
    n_neighbours = near.sum(axis=1) - 1
    crystal = np.isin(ids, [1, 2, 3, 4, 5, 11, 12, 13, 14, 15, 16])
    assert crystal.sum() == 11
    # Device 5 is a crystal that happens to sit at 4 Hz, inside the TCXO cluster: the CFO cannot tell it.
    alone = n_neighbours == 0
    assert alone[crystal & (np.array(ids) != 5)].all()
    assert (n_neighbours[~crystal] >= 3).all()
