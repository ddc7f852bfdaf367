"""Authentication logic on embeddings whose truth is known (Gaussian clusters on the unit sphere): the K-NN
score against its definition, the threshold's false-accept rate on held-out packets within its binomial error,
the CFO gate's window, receiver-offset calibration, multi-packet fusion, rogue figures, the audit rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lorarffi.dsp.impairment import TxImpairments
from lorarffi.errors import ConfigError
from lorarffi.rffi.authenticate import (
    Authenticator,
    audit_rows,
    current_threshold,
    decision_groups,
    summarize,
)
from lorarffi.rffi.iq_gate import DEFAULT_IQ_TOLERANCE, IqGate, IqStatistics, pooled
from lorarffi.rffi.knn import ReferenceIndex
from lorarffi.rffi.registry import Registry
from lorarffi.rffi.rogue import rogue_figures
from lorarffi.rffi.threshold import choose_threshold, enrollment_scores, threshold_for_far

U32 = 2.0**-24  # float32 unit roundoff
CARRIER_HZ = 868.1e6
FP = "sha256:" + "e" * 64


def _clusters(n_devices: int, n_per: int, dim: int, noise: float, seed: int, first_id: int = 100):
    """Unit-norm centres and noisy packets around them: (ids (N,), packets (N, dim), centres (K, dim))."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_devices, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ids = np.repeat(np.arange(first_id, first_id + n_devices), n_per)
    x = centres[ids - first_id] + noise * rng.standard_normal((ids.size, dim))
    return ids, x.astype(np.float32), centres


def _brute_scores(ids, x, q, k):
    """s_d(q) by its definition, float64: mean of the min(k, n_d) smallest Euclidean distances between the
    normalised q and device d's normalised references."""
    xn = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    qn = q.astype(np.float64) / np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)
    devices = np.unique(ids)
    out = np.empty((qn.shape[0], devices.size))
    for j, d in enumerate(devices):
        dist = np.linalg.norm(qn[:, None, :] - xn[ids == d][None, :, :], axis=2)
        out[:, j] = np.sort(dist, axis=1)[:, :k].mean(axis=1)
    return out


def _cohort(d1, d2):
    """The cohort score by its definition (lorarffi.rffi.knn): d1 / sqrt(min(d2, sqrt 2))."""
    return d1 / np.sqrt(np.minimum(d2, np.sqrt(2.0)))


def _cohort_bound(d1, d2, delta: float):
    """Error of the cohort score when each distance is within ``delta``: |ds/dd1| delta + |ds/dd2| delta."""
    d2 = np.minimum(d2, np.sqrt(2.0))
    return delta * (1 / np.sqrt(d2) + d1 / (2 * d2**1.5)) + 1e-15


def _distance_bound(dim: int, d_min: float) -> float:
    """Float32 error of a distance d = sqrt(2 - 2 cos) computed from a float32 dot product of normalised
    vectors: the cosine is within about (dim + 4) u of the exact one (dim products and sums of terms whose
    magnitudes add up to at most 1, and the two normalisations), and dd/dcos = -1/d; twice that for margin."""
    return 2 * (dim + 4) * U32 / d_min


# -- the score ---------------------------------------------------------------------------------------------
def test_score_is_the_mean_distance_to_the_k_nearest_references_of_each_device() -> None:
    ids, x, centres = _clusters(12, 20, 16, 0.15, seed=1)
    # uneven enrollments: one device with fewer references than k
    keep = ~((ids == 105) & (np.arange(ids.size) % 20 >= 6))
    ids, x = ids[keep], x[keep]
    q = (centres[[0, 5, 9]] + 0.15 * np.random.default_rng(2).standard_normal((3, 16))).astype(np.float32)
    index = ReferenceIndex(ids, x, k=8, n_candidates=4)
    want = _brute_scores(ids, x, q, 8)
    got = index.score_all(q)
    d_min = 0.1  # no packet lies this close to a reference here (noise 0.15 x 4 in 16 dimensions)
    np.testing.assert_allclose(got, want, rtol=0, atol=_distance_bound(16, d_min))
    assert np.array_equal(index.counts, np.bincount(np.searchsorted(index.device_ids, ids)))
    near = index.search(q)
    assert near.device_id.tolist() == [100, 105, 109] and np.array_equal(near.index, want.argmin(axis=1))
    delta = _distance_bound(16, d_min)
    d1, d2 = np.sort(want, axis=1)[:, 0], np.sort(want, axis=1)[:, 1]
    np.testing.assert_allclose(near.distance, d1, rtol=0, atol=delta)
    np.testing.assert_allclose(near.runner_up_distance, d2, rtol=0, atol=delta)
    np.testing.assert_allclose(near.score, d1, rtol=0, atol=delta)  # the default score: the distance
    # the cohort score d1 / sqrt(d2) (d2 < sqrt 2 here), within the bound of the two distances' errors
    assert np.all(d2 < np.sqrt(2))
    cohort = ReferenceIndex(ids, x, k=8, n_candidates=4, score="cohort").search(q)
    assert np.array_equal(cohort.index, near.index)
    assert np.all(np.abs(cohort.score - _cohort(d1, d2)) <= _cohort_bound(d1, d2, delta))
    # the search scores only its candidates; with them covering every device it is the exhaustive one
    full = ReferenceIndex(ids, x, k=8, n_candidates=12)
    assert np.array_equal(full.search(q).index, got.argmin(axis=1))


def test_leaving_a_row_or_a_device_out() -> None:
    ids, x, _ = _clusters(6, 10, 8, 0.3, seed=3)
    index = ReferenceIndex(ids, x, k=4)
    dev = np.array([0, 2, 5])
    row = np.array([3, 0, 9])
    q = index.blocks[dev, row]
    got = index.device_scores(q, dev[:, None], leave_out=(dev, row))[:, 0]
    for i, (d, r) in enumerate(zip(dev, row, strict=True)):
        others = np.delete(np.flatnonzero(ids == index.device_ids[d]), r)
        want = _brute_scores(ids[others], x[others], q[i : i + 1], 4)[0, 0]
        assert abs(got[i] - want) <= _distance_bound(8, 0.1)
    # leave a device out: its packets go to another device, with that device's score
    near = index.search(q, exclude=dev)
    assert not np.any(near.index == dev)
    all_scores = index.score_all(q)
    all_scores[np.arange(3), dev] = np.inf
    np.testing.assert_array_equal(near.index, all_scores.argmin(axis=1))


def test_bad_shapes_are_refused() -> None:
    ids, x, _ = _clusters(3, 4, 8, 0.3, seed=0)
    with pytest.raises(ConfigError, match="k=0"):
        ReferenceIndex(ids, x, k=0)
    with pytest.raises(ConfigError, match="device ids for"):
        ReferenceIndex(ids[:-1], x)
    with pytest.raises(ConfigError, match="dimensions"):
        ReferenceIndex(ids, x).search(np.ones((1, 5)))


# -- the threshold -----------------------------------------------------------------------------------------
def test_threshold_for_far_accepts_at_most_far_and_ties_never_let_more_in() -> None:
    s = np.arange(100, dtype=float)
    t = threshold_for_far(s, 0.05)
    assert np.sum(s <= t) == 5 and np.sum(s <= t + 0.6) == 6
    tied = np.array([1.0, 2.0, 2.0, 2.0, 3.0])
    assert np.sum(tied <= threshold_for_far(tied, 0.5)) == 1  # 2 allowed, but three share the next score
    assert np.sum(tied <= threshold_for_far(tied, 0.1)) == 0
    with pytest.raises(ConfigError, match="far="):
        threshold_for_far(s, 1.0)


def test_chosen_threshold_gives_the_requested_far_on_held_out_packets_within_binomial_error() -> None:
    """Enrollment packets and held-out packets of the same 50 devices are i.i.d. given the devices, so the
    held-out packets' impostor scores (each scored with its own device left out) fall below the threshold at
    the rate asked for, up to the binomial error of the two samples: 4 sigma of
    sqrt(far (1 - far) (1 / n_enroll + 1 / n_test)), plus one enrollment packet for the discreteness of the
    quantile. The same for the FRR estimate against held-out genuine scores (whose references are one more
    than leave-one-out's: a bias far below the error)."""
    n_dev, n_per, dim = 50, 160, 16
    ids, x, _ = _clusters(n_dev, n_per, dim, 0.2, seed=7)
    enroll = np.arange(ids.size) % n_per < n_per // 2
    for score in ("knn", "cohort"):
        _check_far_on_held_out(ReferenceIndex(ids[enroll], x[enroll], score=score), ids[~enroll], x[~enroll])


def _check_far_on_held_out(index: ReferenceIndex, held_ids, held) -> None:
    """The test above on one score: ``index`` holds half of each device's 160 packets, ``held`` the rest."""
    n_dev, n_per = len(index), 160
    own = np.searchsorted(index.device_ids, held_ids)
    other = index.search(held, exclude=own)  # the nearest device but its own: a genuine packet's runner-up
    impostor = other.score
    genuine = index.normalise(index.device_scores(held, own[:, None])[:, 0], other.distance)
    for far in (0.02, 0.1):
        choice = choose_threshold(index, far)
        n_e, n_t = choice.n_impostor, impostor.size
        assert n_e == n_dev * n_per // 2 and choice.far_estimate <= far
        sigma = math.sqrt(far * (1 - far) * (1 / n_e + 1 / n_t))
        measured_far = float(np.mean(impostor <= choice.value))
        assert abs(measured_far - far) <= 4 * sigma + 1 / n_e, (far, measured_far)
        frr = float(np.mean(genuine > choice.value))
        p = choice.frr_estimate
        assert 0.02 < p < 0.98  # the clusters overlap enough for both error rates to be measurable
        assert abs(frr - p) <= 4 * math.sqrt(p * (1 - p) * (1 / choice.n_genuine + 1 / n_t)) + 1 / n_e
    # groups of 4 packets (mean score) have their own threshold for the same rate, with the same guarantee
    far, m = 0.1, 4
    fused = choose_threshold(index, far, packets_per_decision=m)
    groups = decision_groups(held_ids, m)
    group_impostor = index.search_groups(held, groups, exclude=own[groups[:, 0]]).score
    n_e, n_t = fused.n_impostor, group_impostor.size
    assert n_e == n_t == n_dev * n_per // 2 // m
    sigma = math.sqrt(far * (1 - far) * (1 / n_e + 1 / n_t))
    assert abs(float(np.mean(group_impostor <= fused.value)) - far) <= 4 * sigma + 1 / n_e
    assert fused.value > choose_threshold(index, far).value  # means of impostor scores concentrate upwards


def test_enrollment_scores_cap_the_packets_evenly() -> None:
    ids, x, _ = _clusters(10, 30, 8, 0.4, seed=4)
    index = ReferenceIndex(ids, x, k=5)
    impostor, genuine = enrollment_scores(index, max_packets=50)
    assert impostor.size == genuine.size == 50
    with pytest.raises(ConfigError, match="at least two"):
        enrollment_scores(ReferenceIndex(ids[:30], x[:30]))


# -- the registry-backed authenticator ---------------------------------------------------------------------
def _registry(tmp_path, n_dev=8, n_per=40, dim=16, noise=0.35, seed=5, cfo_spread_hz=20.0):
    ids, x, centres = _clusters(n_dev, n_per, dim, noise, seed=seed)
    rng = np.random.default_rng(seed + 1)
    cfo_mean = rng.uniform(-5000, 5000, n_dev)
    reg = Registry.create(tmp_path / "reg.db", model_fingerprint=FP, embedding_dim=dim)
    for j, d in enumerate(np.unique(ids)):
        cfo = cfo_mean[j] + cfo_spread_hz * rng.standard_normal(n_per)
        reg.enroll_device(int(d), x[ids == d], cfo_hz=cfo, carrier_hz=CARRIER_HZ)
    return reg, centres, cfo_mean


def _window_hz(record, margin_ppm=2.5, k_sigma=4.0):
    """The CFO gate's half-width of an enrolled device by its definition (lorarffi.rffi.hybrid)."""
    half_range = max(record.cfo_max_hz - record.cfo_mean_hz, record.cfo_mean_hz - record.cfo_min_hz)
    return max(k_sigma * record.cfo_std_hz, half_range) + margin_ppm * CARRIER_HZ / 1e6


def test_cfo_outside_the_nearest_devices_window_is_rogue(tmp_path) -> None:
    reg, centres, _ = _registry(tmp_path)
    with reg:
        auth = Authenticator.from_registry(reg, far=0.05)
        rec = reg.device(102)
        lam = _window_hz(rec)
        q = np.repeat(centres[2:3], 4, axis=0)  # at the device's centre: the score accepts
        cfo = rec.cfo_mean_hz + np.array([lam - 1.0, -(lam - 1.0), lam + 1.0, np.nan])
        dec = auth.decide(q, cfo)
        assert dec.nearest_device_id.tolist() == [102] * 4
        assert dec.decision == [102, 102, "rogue", 102]  # NaN: nothing to gate on
        assert dec.reason == [None, None, "cfo", None]
        far_off = auth.decide(-centres[2:3], [rec.cfo_mean_hz + lam + 1.0])  # bad score and CFO
        assert far_off.reason == ["score+cfo"]
        # without the gate the CFO does not matter
        no_gate = Authenticator.from_registry(reg, cfo_gate=False).decide(q, cfo)
        assert no_gate.decision == [102] * 4


def _iq(image, leakage, se, n, rng):
    """n packets' measurements about (image, leakage), each with standard error ``se`` (complex)."""
    noise = se * (rng.standard_normal((2, n)) + 1j * rng.standard_normal((2, n))) / np.sqrt(2)
    return TxImpairments(image + noise[0], leakage + noise[1], np.full(n, se), np.full(n, se))


def _iq_registry(tmp_path, se=0.004):
    """``_registry``'s clusters with every device's IQ image and leakage: the j-th at (0.01 j, 0.02) * j."""
    ids, x, centres = _clusters(8, 40, 16, 0.35, seed=5)
    rng = np.random.default_rng(6)
    reg = Registry.create(tmp_path / "reg.db", model_fingerprint=FP, embedding_dim=16)
    for j, d in enumerate(np.unique(ids)):
        reg.enroll_device(int(d), x[ids == d], cfo_hz=rng.uniform(-10, 10, 40), carrier_hz=CARRIER_HZ,
                          iq=_iq(0.01j * j, 0.02 * j, se, 40, rng))
    return reg, centres


def test_iq_gate_rejects_a_twin_whose_transmitter_imbalance_is_another(tmp_path) -> None:
    reg, centres = _iq_registry(tmp_path)
    rng = np.random.default_rng(7)
    with reg:
        rec = reg.device(102)
        assert rec.iq_image_im == pytest.approx(0.02, abs=5 * 0.004 / np.sqrt(40))
        # spread of 40 measurements with se 0.004, and the mean's se (0.004 / sqrt 40) in quadrature
        assert rec.iq_image_std == pytest.approx(0.004 * np.sqrt(1 + 1 / 40), rel=0.35)
        auth = Authenticator.from_registry(reg, far=0.05)
        assert auth.iq_gate is not None and auth.iq_gate.tolerance == DEFAULT_IQ_TOLERANCE
        q = np.repeat(centres[2:3], 200, axis=0)  # at device 102's centre: the score accepts all
        own = _iq(0.02j, 0.04, 0.004, 100, rng)
        twin = _iq(0.02j + 0.04, 0.04 - 0.04j, 0.004, 100, rng)  # its imbalance and leakage are its own
        both = TxImpairments(*(np.concatenate([getattr(own, f), getattr(twin, f)])
                               for f in ("image", "leakage", "image_se", "leakage_se")))
        dec = auth.decide(q, np.zeros(200), impairments=both)
        assert dec.nearest_device_id.tolist() == [102] * 200
        # z by its definition: the packet's and the device's spread added in quadrature
        g = auth.iq_gate
        k = int(np.searchsorted(g.device_ids, 102))
        z_image2 = np.abs(both.image - g.image_mean[k]) ** 2 / (both.image_se**2 + g.image_std[k] ** 2)
        z_leak2 = np.abs(both.leakage - g.leakage_mean[k]) ** 2 / (both.leakage_se**2 + g.leakage_std[k] ** 2)
        z = np.sqrt(z_image2 + z_leak2)
        np.testing.assert_allclose(dec.iq_z, z, rtol=1e-12)
        assert np.array_equal(dec.iq_ok, z <= DEFAULT_IQ_TOLERANCE)
        # own packets: z^2 is about a sum of two chi-square(2)/4 (se and spread alike): past 5 almost never
        assert np.mean(dec.device_id[:100] == 102) >= 0.99
        # the twin lies 0.04 away in each, 7 standard errors (sqrt(2) 0.004) in each, 10 in both: rejected
        assert np.all(dec.device_id[100:] == -1)
        assert set(np.asarray(dec.reason, dtype=object)[100:][dec.device_id[100:] == -1]) == {"iq"}
        rec0 = dec.to_records()[150]
        assert rec0["iq_z"] == pytest.approx(z[150]) and rec0["iq_ok"] == bool(z[150] <= DEFAULT_IQ_TOLERANCE)
        # unmeasured packets pass; so does everything without the gate
        assert auth.decide(q[:3], np.zeros(3)).decision == [102] * 3
        assert auth.decide(q[:3], np.zeros(3), impairments=TxImpairments.unknown(3)).decision == [102] * 3
        no_gate = Authenticator.from_registry(reg, iq_gate=False)
        assert no_gate.iq_gate is None
        assert no_gate.decide(q, np.zeros(200), impairments=both).decision == [102] * 200
        assert no_gate.decide(q[:1], np.zeros(1)).to_records()[0]["iq_ok"] is None
        with pytest.raises(ConfigError, match="impairments"):
            auth.decide(q[:3], np.zeros(3), impairments=TxImpairments.unknown(2))
        # groups of 4: the twin's pooled measurements are still its own (rejected), the device's its own
        fused = auth.decide(q, np.zeros(200), impairments=both, packets_per_decision=4,
                            transmitter_ids=np.repeat([1, 2], 100)).fused
        assert np.all(fused.device_id[fused.members[:, 0] >= 100] == -1)
        assert np.all(fused.device_id[fused.members[:, 0] < 100] == 102)


def test_a_gate_of_devices_not_enrolled_is_refused() -> None:
    ids, x, _ = _clusters(2, 5, 8, 0.1, seed=4)
    stats = IqStatistics(0.0, 0.0, 0.01, 0.0, 0.0, 0.01)
    with pytest.raises(ConfigError, match="IQ gate holds devices that are not enrolled"):
        Authenticator(ReferenceIndex(ids, x), 0.5, iq_gate=IqGate([100, 999], [stats, stats]))
    assert Authenticator(ReferenceIndex(ids, x), 0.5, iq_gate=IqGate([101], [stats])).iq_gate is not None


def test_pooled_is_the_inverse_variance_mean() -> None:
    m = TxImpairments(np.array([1.0, 3.0, np.nan]) + 0j, np.array([0.0, 1j, 5.0]),
                      np.array([1.0, 2.0, 1.0]), np.array([1.0, 1.0, np.nan]))
    got = pooled(m, np.array([[0, 1], [2, 2]]))
    assert got.image[0] == pytest.approx((1 / 1 + 3 / 4) / (1 + 1 / 4))
    assert got.image_se[0] == pytest.approx(1 / np.sqrt(1.25))
    assert got.leakage[0] == pytest.approx(0.5j) and got.leakage_se[0] == pytest.approx(1 / np.sqrt(2))
    assert np.isnan(got.image[1]) and np.isnan(got.leakage[1])  # nothing measured in group 1


def test_a_common_receiver_offset_is_calibrated_away(tmp_path) -> None:
    reg, centres, cfo_mean = _registry(tmp_path)
    offset_hz = 10.0 * CARRIER_HZ / 1e6  # a 10 ppm receiver: far beyond every window
    rng = np.random.default_rng(9)
    q = np.repeat(centres, 6, axis=0) + 0.05 * rng.standard_normal((48, 16))
    cfo = np.repeat(cfo_mean, 6) + offset_hz + 5.0 * rng.standard_normal(48)
    with reg:
        blind = Authenticator.from_registry(reg, calibrate_receiver=False).decide(q, cfo)
        assert set(blind.reason) == {"cfo"}
        dec = Authenticator.from_registry(reg).decide(q, cfo)
    assert dec.decision == np.repeat(np.arange(100, 108), 6).tolist()
    # the offset is the median over devices of their packets' median residual: within the enrollment spread
    assert abs(dec.receiver_offset_hz - offset_hz) <= 4 * 20.0


def test_threshold_is_chosen_once_and_again_after_an_enrollment_or_for_another_far(tmp_path) -> None:
    reg, centres, _ = _registry(tmp_path)
    with reg:
        ids, emb = reg.reference_embeddings()
        index = ReferenceIndex(ids, emb)
        first = current_threshold(reg, index, far=0.05)
        assert reg.threshold == first and first.k == 15 and "leave-one-device-out" in first.method
        assert first.value == choose_threshold(index, 0.05).value
        assert current_threshold(reg, index) == first  # stored, still valid: reused as it is
        other = current_threshold(reg, index, far=0.2)
        assert other.far == 0.2 and other.value > first.value
        reg.enroll_device(100, emb[ids == 100][::2], cfo_hz=[0.0])
        ids2, emb2 = reg.reference_embeddings()
        again = current_threshold(reg, ReferenceIndex(ids2, emb2))
        assert again.set_at > other.set_at and again.far == 0.2 and again.score == "knn"
        # a threshold chosen on another score is chosen again on this one, and the other way back
        cohort_index = ReferenceIndex(ids2, emb2, score="cohort")
        cohort = current_threshold(reg, cohort_index)
        assert cohort.score == "cohort"
        assert cohort.value == choose_threshold(cohort_index, 0.2).value != again.value
        assert current_threshold(reg, cohort_index) == cohort
        assert current_threshold(reg, ReferenceIndex(ids2, emb2)).value == again.value
        # a threshold stored before scores had names was chosen on the distance alone
        reg.set_threshold(again.value, far=0.2, method=again.method, k=15)
        assert reg.threshold.score is None
        assert current_threshold(reg, ReferenceIndex(ids2, emb2)).set_at == reg.threshold.set_at  # kept
        assert current_threshold(reg, cohort_index).score == "cohort"


def test_cohort_score_without_a_runner_up_uses_the_unrelated_distance() -> None:
    """With one device left to search (two enrolled, one left out), the runner-up's distance is sqrt 2, the
    distance of orthogonal unit vectors; a runner-up farther than that is capped at it."""
    ids, x, centres = _clusters(2, 10, 8, 0.1, seed=4)
    index = ReferenceIndex(ids, x, k=3, score="cohort")
    q = x[:4]  # device 100's packets, scored as strangers against device 101
    near = index.search(q, exclude=np.zeros(4, np.int64))
    assert near.device_id.tolist() == [101] * 4 and np.all(np.isinf(near.runner_up_distance))
    np.testing.assert_allclose(near.score, near.distance / 2**0.25, rtol=1e-12)
    far_apart = ReferenceIndex(ids, np.concatenate([x[:10], -x[:10]]), k=3, score="cohort").search(x[:4])
    assert np.all(far_apart.runner_up_distance > np.sqrt(2))
    np.testing.assert_allclose(far_apart.score, far_apart.distance / 2**0.25, rtol=1e-12)
    with pytest.raises(ConfigError, match="score="):
        ReferenceIndex(ids, x, score="ratio")


def test_fused_decisions_average_the_members_scores(tmp_path) -> None:
    reg, centres, cfo_mean = _registry(tmp_path, noise=0.4)
    rng = np.random.default_rng(11)
    truth = np.repeat(np.arange(100, 108), 10)
    q = (centres[truth - 100] + 0.4 * rng.standard_normal((truth.size, 16))).astype(np.float32)
    cfo = cfo_mean[truth - 100]
    with reg:
        auth = Authenticator.from_registry(reg, far=0.05, n_candidates=8)
        dec = auth.decide(q, cfo, packets_per_decision=4, transmitter_ids=truth)
    f = dec.fused
    assert f is not None and f.members.shape == (16, 4)  # 10 packets per device: 2 groups of 4, 2 left over
    assert np.array_equal(f.members, decision_groups(truth, 4))
    assert np.sum(f.group < 0) == 16 and np.all(truth[f.members] == truth[f.members[:, :1]])
    mean = auth.index.score_all(q)[f.members].mean(axis=1)  # (G, K), every device a candidate
    assert np.array_equal(f.nearest_device_id, auth.index.device_ids[mean.argmin(axis=1)])
    # the same float32 distances from other batch shapes (BLAS blocking): within their rounding bound
    np.testing.assert_allclose(f.score, mean.min(axis=1), rtol=0, atol=_distance_bound(16, 0.3))
    # on the cohort score, the mean distances of the nearest device and of the runner-up
    with reg:
        cohort = Authenticator.from_registry(reg, far=0.05, n_candidates=8, score="cohort")
        fc = cohort.decide(q, cfo, packets_per_decision=4, transmitter_ids=truth).fused
    d1, d2 = np.sort(mean, axis=1)[:, 0], np.sort(mean, axis=1)[:, 1]
    assert np.array_equal(fc.nearest_device_id, f.nearest_device_id)
    assert np.all(np.abs(fc.score - _cohort(d1, d2)) <= _cohort_bound(d1, d2, _distance_bound(16, 0.3)))
    s = summarize(dec, truth, auth.index.device_ids)
    assert s["fused_n_decisions"] == 16 and s["packets_per_decision"] == 4
    assert (
        f.threshold
        == s["fused_threshold"]
        == choose_threshold(auth.index, 0.05, packets_per_decision=4).value
    )
    assert s["accuracy"] == float(np.mean(dec.device_id == truth))
    assert s["fused_accuracy"] == float(np.mean(f.device_id == truth[f.members[:, 0]]))
    assert s["fused_accuracy"] > s["accuracy"]  # the point of fusing: noise 0.4 makes single packets err
    records = dec.to_records()
    assert records[0]["fused_group"] == 0 and records[9]["fused_group"] is None
    rows = audit_rows(dec, source="t")
    assert len(rows) == truth.size + 16 and rows[-1].source == "t [fused 4]"
    assert [r.verdict for r in rows[: truth.size]] == dec.verdict


def test_summary_rates_from_labels() -> None:
    from lorarffi.rffi.authenticate import Decisions

    dev = np.array([1, 2, -1, 2, -1, 5])
    truth = np.array([1, 1, 1, 2, 9, 9])
    dec = Decisions(dev, np.abs(dev), np.zeros(6), 0.5, np.zeros(6), np.ones(6, bool))
    s = summarize(dec, truth, [1, 2, 5])
    assert (s["accuracy"], s["rogue_rate"], s["false_reject_rate"]) == (0.5, 0.5, 0.25)
    assert (s["n_enrolled_packets"], s["n_unenrolled_packets"], s["n_rogue"]) == (4, 2, 2)
    assert summarize(dec, None, [1, 2, 5])["accuracy"] is None


# -- rogue figures -----------------------------------------------------------------------------------------
def test_auc_counts_pairs_and_ties_half() -> None:
    legit = np.array([0.1, 0.2, 0.2, 0.5])
    rogue = np.array([0.2, 0.4, 0.9])
    pairs = [(r > g) + 0.5 * (r == g) for r in rogue for g in legit]
    assert rogue_figures(legit, rogue).auc == pytest.approx(sum(pairs) / 12, abs=1e-15)
    f = rogue_figures(legit, rogue, far=0.34)  # one of three rogues may pass
    assert f.threshold == pytest.approx(0.3) and f.far_measured == pytest.approx(1 / 3) and f.frr == 0.25


def test_auc_and_eer_of_two_gaussians_match_their_closed_forms() -> None:
    """Legitimate N(0, 1), rogue N(d, 1): AUC = Phi(d / sqrt 2), EER = Phi(-d / 2). With 20,000 scores each
    the estimates' standard errors are below 0.002 and 0.003: 5 of them allowed."""
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    d = 2.5
    f = rogue_figures(rng.standard_normal(20_000), d + rng.standard_normal(20_000), far=0.01)
    assert abs(f.auc - norm.cdf(d / math.sqrt(2))) <= 5 * 0.002
    assert abs(f.eer - norm.cdf(-d / 2)) <= 5 * 0.003
    assert abs(f.eer_threshold - d / 2) <= 0.05
    # FRR at the 1 % rogue quantile: its own binomial error (0.0035) and the quantile's (sd 0.026 in score,
    # times the legitimate density 0.39 there: 0.010)
    assert f.far_measured <= 0.01 and abs(f.frr - norm.sf(d + norm.ppf(0.01))) <= 5 * 0.011
