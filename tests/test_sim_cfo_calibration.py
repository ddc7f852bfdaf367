"""The calibrated CFO model against the real file it was fitted to (shared/data/real_cfo_30dev).

A large calibrated fleet at the real fleet's 433 MHz carrier is "measured" as the real one was: per device,
the mean and standard deviation of ~86 first frames of a training session, the mean on another day, on an
NLOS day, and late in the training session; first and second frames of each pair (the firmware sends a pair
about every 0.19 s: the second frame right after the first's ~36 ms airtime, the next pair 150 ms after the
second). Each statistic of the 30 real devices is then checked against the simulated distribution with a
stated test:

- two-sample Kolmogorov-Smirnov tests at alpha = 0.01;
- for medians and 90th percentiles, the distribution-free 99 % confidence interval of the real quantile from
  order statistics (binomial, so its width follows from the sample size: 11 crystal and 19 TCXO devices);
- binomial tests at alpha = 0.01 for shares of devices;
- for whole-fleet statistics (30 devices), the real value inside the central 99 % of 200 simulated fleets.

The file's family of each device is read from its signature, not from a list: TCXO devices show a second
frame offset above 8 Hz (13.8-37 Hz), crystal devices below 2 Hz; the same rule labels the simulated devices.
The datasheet model fails the same checks (negative control).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lorarffi.dsp import LoRaConfig
from lorarffi.sim import Session, make_fleet, simulate_preamble_set
from lorarffi.sim.session import session_mean_cfo_hz

DATA = Path(__file__).parents[2] / "shared" / "data" / "real_cfo_30dev" / "cfo_summary.csv"
CARRIER_HZ = 433e6
PAIR_PERIOD_S = 0.19
TRAIN_PAIRS, LATE_START_PAIR, LATE_PAIRS = 86, 400, 67  # the file's early rows, and its ~67 late rows
TCXO_SIGNATURE_HZ = 8.0  # second-frame offset separating the families (real: <= 2 Hz vs >= 13.8 Hz)
ALPHA = 0.01
N_SIM = 3000

TRAIN = Session(day=1, minutes_since_power_on=60.0)
ANOTHER = Session(day=2, minutes_since_power_on=60.0)
NLOS = Session(day=3, minutes_since_power_on=60.0, environment="nlos")


def _real() -> dict[str, dict[int, dict[str, float]]]:
    if not DATA.exists():
        pytest.skip(
            f"{DATA} is absent: the real CFO statistics live in the shared data folder beside the repo"
        )
    table: dict[str, dict[int, dict[str, float]]] = {}
    with DATA.open() as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if k not in ("device", "set")}
            table.setdefault(row["set"], {})[int(row["device"])] = values
    return table


@pytest.fixture(scope="module")
def real() -> dict[str, np.ndarray]:
    """The real devices' statistics, one array entry per device (device order), Hz unless said."""
    t = _real()
    ids = sorted(t["train"])
    train, another = t["train"], t["another"]
    off = np.array([train[i]["e2_minus_e1_hz"] for i in ids])
    std = np.array([train[i]["cfo_std_hz"] for i in ids])
    return {
        "tcxo": off > TCXO_SIGNATURE_HZ,
        "e1_mean": np.array([train[i]["e1_mean_hz"] for i in ids]),
        "mean": np.array([train[i]["cfo_mean_hz"] for i in ids]),
        "shift": np.array([another[i]["cfo_mean_hz"] - train[i]["cfo_mean_hz"] for i in ids]),
        "second_frame": off,
        # per-frame spread of first frames: the pair offset (half of e2 - e1 either side) taken out
        "frame_std": np.sqrt(np.maximum(std**2 - (off / 2) ** 2, 0.0)),
        "nlos_ids": np.array([i for i in ids if i in t["nlos"]]),
        "nlos": np.array(
            [t["nlos"][i]["cfo_mean_hz"] - train[i]["cfo_mean_hz"] for i in ids if i in t["nlos"]]
        ),
        "drift": np.array(
            [t["trainlast"][i]["cfo_mean_hz"] - train[i]["cfo_mean_hz"] for i in ids if i in t["trainlast"]]
        ),
    }


def _frames(dev, session: Session, first_pair: int, n_pairs: int, rng: np.random.Generator):
    """First and second frames of ``n_pairs`` pairs, as simulate_preamble_set(frame_pairs=True) makes them."""
    t_s = session.minutes_since_power_on * 60.0 + (first_pair + np.arange(n_pairs)) * PAIR_PERIOD_S
    mean = session_mean_cfo_hz(dev, session, t_s)
    e1 = mean + dev.cfo_jitter_hz * rng.standard_normal(n_pairs)
    e2 = mean + dev.second_frame_offset_hz + dev.cfo_jitter_hz * rng.standard_normal(n_pairs)
    return e1, e2


def _measure(fleet, seed: int) -> dict[str, np.ndarray]:
    """The real file's statistics of a simulated fleet."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {k: [] for k in ("e1_mean", "mean", "std", "off", "shift", "nlos", "drift")}
    frames: dict[str, list[np.ndarray]] = {"another": [], "another_pairs": []}
    for dev in fleet:
        e1, e2 = _frames(dev, TRAIN, 0, TRAIN_PAIRS, rng)
        a1, a2 = _frames(dev, ANOTHER, 0, TRAIN_PAIRS, rng)
        n1, n2 = _frames(dev, NLOS, 0, TRAIN_PAIRS, rng)
        l1, l2 = _frames(dev, TRAIN, LATE_START_PAIR, LATE_PAIRS, rng)
        mean = (e1.mean() + e2.mean()) / 2
        out["e1_mean"].append(e1.mean())
        out["mean"].append(mean)
        out["std"].append(e1.std(ddof=1))
        out["off"].append(np.mean(e2 - e1))
        out["shift"].append((a1.mean() + a2.mean()) / 2 - mean)
        out["nlos"].append((n1.mean() + n2.mean()) / 2 - mean)
        out["drift"].append((l1.mean() + l2.mean()) / 2 - mean)
        frames["another"].append(np.concatenate([a1, a2]))
        frames["another_pairs"].append((a1 + a2) / 2)
    res = {k: np.array(v) for k, v in out.items()}
    res["tcxo"] = res["off"] > TCXO_SIGNATURE_HZ
    res["another_frames"] = np.array(frames["another"])
    res["another_pairs"] = np.array(frames["another_pairs"])
    return res


@pytest.fixture(scope="module")
def sim() -> dict[str, np.ndarray]:
    return _measure(make_fleet(N_SIM, seed=11, cfo_model="calibrated", carrier_freq_hz=CARRIER_HZ), seed=12)


@pytest.fixture(scope="module")
def datasheet() -> dict[str, np.ndarray]:
    return _measure(make_fleet(N_SIM, seed=11, carrier_freq_hz=CARRIER_HZ), seed=12)


def _quantile_ci(data: np.ndarray, q: float, confidence: float = 0.99) -> tuple[float, float]:
    """Distribution-free confidence interval of the ``q`` quantile from the order statistics of ``data``.

    ``P(X_(r) <= xi_q) = P(Bin(n, q) >= r)`` and ``P(xi_q <= X_(s)) = P(Bin(n, q) <= s - 1)``: ``r`` is the
    largest and ``s`` the smallest index keeping each tail below ``(1 - confidence) / 2`` (+-inf if none).
    """
    x = np.sort(data)
    n = x.size
    tail = (1 - confidence) / 2
    r = max((k for k in range(1, n + 1) if stats.binom.sf(k - 1, n, q) >= 1 - tail), default=0)
    s = min((k for k in range(1, n + 1) if stats.binom.cdf(k - 1, n, q) >= 1 - tail), default=n + 1)
    return (x[r - 1] if r else -np.inf), (x[s - 1] if s <= n else np.inf)


def _quantile_fits(real_values: np.ndarray, sim_values: np.ndarray, q: float) -> bool:
    lo, hi = _quantile_ci(real_values, q)
    return bool(lo <= np.quantile(sim_values, q) <= hi)


def _ks_fits(real_values: np.ndarray, sim_values: np.ndarray) -> bool:
    return bool(stats.ks_2samp(real_values, sim_values).pvalue > ALPHA)


def _mean_fits(real_values: np.ndarray, sim_values: np.ndarray) -> bool:
    """The real sample's mean inside the central 99 % of the means of 4000 samples of its size drawn from the
    simulated values (the sampling distribution of the mean under the model): a test of location, stronger
    than KS for a scale once taken of logarithms."""
    rng = np.random.default_rng(0)
    means = rng.choice(sim_values, (4000, real_values.size)).mean(axis=1)
    lo, hi = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    return bool(lo <= real_values.mean() <= hi)


def _to_ppm(hz: np.ndarray) -> np.ndarray:
    return hz / CARRIER_HZ * 1e6


def test_quantile_ci_has_its_binomial_coverage():
    """The median of 11 values: (X_(2), X_(10)) covers it with 1 - 2 P(Bin(11, 1/2) <= 1) = 0.988, short of
    0.99, so the 99 % interval is (X_(1), X_(11)) and the 98 % one (X_(2), X_(10)). The 90th percentile of
    11 values has no finite upper bound at 99 %: P(X_(11) < xi_0.9) = 0.9**11 = 0.31."""
    x = np.arange(1.0, 12.0)
    assert _quantile_ci(x, 0.5) == (1.0, 11.0)
    assert _quantile_ci(x, 0.5, confidence=0.98) == (2.0, 10.0)
    assert _quantile_ci(x, 0.9)[1] == np.inf


@pytest.mark.slow
def test_families_share_as_the_real_fleet(real, sim, datasheet):
    """Share of TCXO devices (second-frame signature): 19 of 30 real; binomial test at the simulated rate.
    Share within +-250 Hz of zero at 433 MHz: 20 of 30 real (crystal devices can sit there too)."""
    n = real["tcxo"].size
    assert stats.binomtest(int(real["tcxo"].sum()), n, sim["tcxo"].mean()).pvalue > ALPHA
    near = int(np.sum(np.abs(real["mean"]) < 250))
    assert stats.binomtest(near, n, np.mean(np.abs(sim["mean"]) < 250)).pvalue > ALPHA
    # negative control: the datasheet model has (almost) no TCXO signature
    assert stats.binomtest(int(real["tcxo"].sum()), n, datasheet["tcxo"].mean()).pvalue < ALPHA


@pytest.mark.slow
def test_offsets_per_family_match(real, sim):
    """Settled offsets in ppm per family (11 crystal, 19 TCXO first-frame means): KS at alpha 0.01."""
    for tcxo in (False, True):
        assert _ks_fits(
            _to_ppm(real["e1_mean"][real["tcxo"] == tcxo]), _to_ppm(sim["e1_mean"][sim["tcxo"] == tcxo])
        )
    # negative control: the families' offsets differ (a swapped family would fail)
    assert not _ks_fits(_to_ppm(real["e1_mean"][real["tcxo"]]), _to_ppm(sim["e1_mean"][~sim["tcxo"]]))


@pytest.mark.slow
def test_day_shifts_per_family_match(real, sim, datasheet):
    """|day-to-day shift| per family (real medians 37 and 2.9 Hz, 90th percentiles 124 and 8.8 Hz): the
    simulated median and 90th percentile inside the real ones' 99 % order-statistic intervals, KS, and the
    scale: the mean log |shift| of the 11 (19) real devices within the model's 99 % band for that many."""
    for tcxo in (False, True):
        r = np.abs(real["shift"][real["tcxo"] == tcxo])
        s = np.abs(sim["shift"][sim["tcxo"] == tcxo])
        assert _quantile_fits(r, s, 0.5) and _quantile_fits(r, s, 0.9) and _ks_fits(r, s)
        assert _mean_fits(np.log(r), np.log(s))
    # negative control: the datasheet model's shifts (U(80, 250) Hz scales at any carrier) are too large
    assert not _quantile_fits(np.abs(real["shift"]), np.abs(datasheet["shift"]), 0.5)


@pytest.mark.slow
def test_environment_step_matches_the_nlos_day(real, sim, datasheet):
    """NLOS day minus training day: the three real crystal devices moved -1.55, -1.69, -1.81 ppm (KS at
    0.01 against simulated crystal devices); the real TCXO device's -3 Hz lies in the simulated TCXOs'
    central 99 %."""
    tcxo = real["tcxo"][real["nlos_ids"] - 1]
    assert (~tcxo).sum() == 3 and tcxo.sum() == 1
    assert _ks_fits(_to_ppm(real["nlos"][~tcxo]), _to_ppm(sim["nlos"][~sim["tcxo"]]))
    lo, hi = np.quantile(sim["nlos"][sim["tcxo"]], [0.005, 0.995])
    assert lo <= real["nlos"][tcxo][0] <= hi
    assert not _ks_fits(_to_ppm(real["nlos"][~tcxo]), _to_ppm(datasheet["shift"]))  # a day without the step


@pytest.mark.slow
def test_within_session_spread_drift_and_second_frame_match(real, sim):
    """Per-frame spread of first frames over 86 pairs (30 devices), the TCXO second-frame offset (19) and
    the crystal one (11), and |late minus early| means of a session (3 devices): KS at alpha 0.01."""
    assert _ks_fits(real["frame_std"], sim["std"])
    for tcxo in (False, True):
        assert _ks_fits(real["second_frame"][real["tcxo"] == tcxo], sim["off"][sim["tcxo"] == tcxo])
    assert _ks_fits(np.abs(real["drift"]), np.abs(sim["drift"]))
    assert not _ks_fits(real["frame_std"], 4 * sim["std"])  # negative control: a 4x spread is detected


def _fleet_statistics(fleet_stats: dict[str, np.ndarray]) -> dict[str, float]:
    """Spacing of device means and a CFO-only nearest-mean classifier on another day (frames and pairs)."""
    means = fleet_stats["mean"]
    gaps = np.diff(np.sort(means))

    def accuracy(test: np.ndarray) -> float:
        nearest = np.argmin(np.abs(test[..., None] - means), axis=-1)
        return float(np.mean(nearest == np.arange(means.size)[:, None]))

    return {
        "median_gap_hz": float(np.median(gaps)),
        "frame_accuracy": accuracy(fleet_stats["another_frames"]),
        "pair_accuracy": accuracy(fleet_stats["another_pairs"]),
    }


@pytest.mark.slow
def test_thirty_device_fleets_are_as_crowded_as_the_real_one(real):
    """Whole-fleet statistics of the real 30 devices (median neighbour gap 32 Hz; nearest-mean CFO
    classifier 53 % per frame and 81 % on pair means on another day, README) lie in the central 99 % of 200
    simulated 30-device calibrated fleets; a datasheet-model fleet's day shifts (hundreds of Hz) put its
    classifier below that range (negative control)."""
    sims = [
        _fleet_statistics(
            _measure(make_fleet(30, seed=s, cfo_model="calibrated", carrier_freq_hz=CARRIER_HZ), seed=s)
        )
        for s in range(200)
    ]
    observed = {
        "median_gap_hz": float(np.median(np.diff(np.sort(real["mean"])))),
        "frame_accuracy": 0.53,
        "pair_accuracy": 0.81,
    }
    band = {key: np.quantile([s[key] for s in sims], [0.005, 0.995]) for key in observed}
    for key, value in observed.items():
        assert band[key][0] <= value <= band[key][1], (key, value, band[key])
    datasheet = _fleet_statistics(_measure(make_fleet(30, seed=0, carrier_freq_hz=CARRIER_HZ), seed=0))
    assert datasheet["pair_accuracy"] < band["pair_accuracy"][0]


def test_preamble_sets_carry_the_calibrated_cfo_truth():
    """simulate_preamble_set with frame_pairs and an environment: each packet's CFO truth is the session mean
    plus, on odd packets, the second-frame offset, within 5 jitter RMS; TCXO devices keep their offset in
    NLOS, crystal devices move by their environment step."""
    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    fleet = make_fleet(4, seed=2, cfo_model="calibrated", tcxo_fraction=0.5, carrier_freq_hz=CARRIER_HZ)
    assert sorted(d.oscillator for d in fleet) == ["crystal", "crystal", "tcxo", "tcxo"]
    ps = simulate_preamble_set(
        fleet, cfg, 4, session=NLOS, rng=np.random.default_rng(0), multipath=False, frame_pairs=True
    )
    for dev in fleet:
        rows = ps.device_ids == dev.device_id
        mean = session_mean_cfo_hz(dev, NLOS, ps.capture_time_s[rows])
        expected = mean + np.arange(4) % 2 * dev.second_frame_offset_hz
        assert np.all(np.abs(ps.cfo_hz[rows] - expected) < 5 * dev.cfo_jitter_hz)
        step_hz = dev.environment_offset_hz("nlos")
        if dev.oscillator == "tcxo":
            assert step_hz == 0.0 and dev.second_frame_offset_hz > TCXO_SIGNATURE_HZ
        else:
            assert -2.2 < step_hz / CARRIER_HZ * 1e6 < -1.2 and dev.second_frame_offset_hz == 0.0


def test_profiles_round_trip_and_datasheet_ones_write_what_they_always_wrote():
    """A calibrated device's JSON carries its oscillator fields and reads back equal; a datasheet device
    writes none of them (files written before these fields existed still read) and reads back equal too."""
    from lorarffi.sim import DeviceProfile

    tcxo = make_fleet(3, seed=1, cfo_model="calibrated", tcxo_fraction=1.0)[0]
    d = tcxo.to_dict()
    assert d["oscillator"] == "tcxo" and d["wander_std_hz"] > 0 and d["second_frame_offset_hz"] > 0
    assert DeviceProfile.from_dict(d) == tcxo
    plain = make_fleet(1, seed=1)[0]
    written = plain.to_dict()
    assert not {"oscillator", "wander_std_hz", "second_frame_offset_hz"} & set(written)
    assert DeviceProfile.from_dict(written) == plain
