"""CFO estimation and compensation on aligned preambles (lorarffi.dsp.cfo), against analytic truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorarffi.dsp import LoRaConfig, packet_waveform
from lorarffi.dsp.cfo import compensate_cfo, estimate_cfo, estimate_coarse_cfo, estimate_fine_cfo
from lorarffi.errors import ConfigError

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
N_TRIALS = 300


@pytest.fixture(scope="module")
def clean_preambles():
    """300 aligned noise-free SF7/125 kHz/1 MS/s preambles (8 symbols, 8192 samples), known CFO and phase."""
    rng = np.random.default_rng(1234)
    cfo = rng.uniform(-20e3, 20e3, N_TRIALS)
    phase = rng.uniform(0, 2 * np.pi, N_TRIALS)
    x = np.stack([packet_waveform(CFG, cfo_hz=c, phase_rad=p)[: CFG.preamble_samples]
                  for c, p in zip(cfo, phase, strict=True)])
    return x, cfo


def _awgn(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Noise at an in-band SNR: full-band variance = signal power / snr * fs / bw (unit-power signal)."""
    var = 10 ** (-snr_db / 10) * CFG.fs_hz / CFG.bw_hz
    noise = rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape)
    return (x + np.sqrt(var / 2) * noise).astype(np.complex64)


def test_estimate_cfo_is_exact_on_clean_preambles(clean_preambles):
    x, cfo = clean_preambles
    est = estimate_cfo(x, CFG)
    assert est.shape == (N_TRIALS,) and est.dtype == np.float64
    # Exact in exact arithmetic. In float32 each symbol amplitude (a sum of 1024 complex64 products, each
    # within 4 u of its value) is off by at most 4 u in phase; the least-squares slope over 8 symbols turns
    # that into 4 u * 16 / 42 rad per symbol: 1.5e-5 Hz at 976.6 Hz per cycle and symbol. 1e-3 Hz: 60x.
    assert np.max(np.abs(est - cfo)) < 1e-3


@pytest.mark.parametrize("cfo_hz", [0.0, 488.0, -25e3, 25e3, 61e3, -300e3])
def test_estimate_cfo_covers_offsets_far_beyond_one_bin(cfo_hz):
    x = packet_waveform(CFG, cfo_hz=cfo_hz, phase_rad=0.3)[: CFG.preamble_samples]
    assert float(estimate_cfo(x, CFG)) == pytest.approx(cfo_hz, abs=1e-3)
    assert np.ndim(estimate_cfo(x, CFG)) == 0


def test_fine_estimate_wraps_into_the_eq15_range():
    x = packet_waveform(CFG, cfo_hz=1234.5)[: CFG.preamble_samples]
    step = CFG.bw_hz / CFG.n_chips  # 976.5625 Hz
    assert CFG.fine_cfo_range_hz == pytest.approx(step / 2)
    assert float(estimate_fine_cfo(x, CFG)) == pytest.approx(1234.5 - step, abs=1e-3)
    assert float(estimate_fine_cfo(x, CFG, coarse_cfo_hz=1200.0)) == pytest.approx(1234.5, abs=1e-3)
    assert abs(float(estimate_coarse_cfo(x, CFG)) - 1234.5) < 0.2 * step


@pytest.mark.parametrize("shift", [-2, -1, 1, 2])
def test_estimate_cfo_tolerates_small_misalignment(shift):
    full = packet_waveform(CFG, cfo_hz=5_000.0, n_preamble=10)
    x = full[1024 + shift : 1024 + shift + CFG.preamble_samples]
    assert float(estimate_cfo(x, CFG)) == pytest.approx(5_000.0, abs=1e-3)


def test_estimate_cfo_at_a_non_integer_rate():
    cfg = LoRaConfig(sf=11, bw_hz=500e3, fs_hz=2.4e6)
    n = int(8 * cfg.n_chips * cfg.oversampling)
    x = packet_waveform(cfg, cfo_hz=-24_000.0)[:n]
    assert float(estimate_cfo(x, cfg)) == pytest.approx(-24_000.0, abs=0.5)


def test_batch_equals_row_by_row(clean_preambles):
    x, _ = clean_preambles
    batch = estimate_cfo(x[:5], CFG)
    rows = np.array([float(estimate_cfo(r, CFG)) for r in x[:5]])
    # Batch and row may round the coarse stage's float32 FFTs differently; the fine stage takes any coarse
    # value out again, up to its own float32 limit (1.5e-5 Hz, see the clean-preamble test): twice that.
    np.testing.assert_allclose(batch, rows, rtol=0, atol=3e-5)


@settings(max_examples=20, deadline=None)
@given(delta_hz=st.floats(-15e3, 15e3), k=st.integers(0, N_TRIALS - 1))
def test_cfo_is_equivariant_under_frequency_shift(clean_preambles, delta_hz, k):
    x, cfo = clean_preambles
    shifted = compensate_cfo(x[k], -delta_hz, CFG.fs_hz)  # adds delta_hz
    assert float(estimate_cfo(shifted, CFG)) == pytest.approx(cfo[k] + delta_hz, abs=1e-2)


def test_fine_cfo_reaches_the_cramer_rao_bound(clean_preambles):
    r"""Fine-CFO RMSE <= 2 x the Cramer-Rao bound at SNR >= 20 dB and <= 10 Hz at SNR >= 10 dB.

    Cramer-Rao bound. After dechirping, an aligned preamble of ``K`` symbols of ``L = N*fs/bw`` samples
    (``N = 2**sf``) is a complex tone ``d[n] = A exp(j(2 pi f n Ts + phi)) + w[n]``, ``n = 0..M-1``,
    ``M = K L``, in circular white Gaussian noise of variance ``s2`` per sample (the full-band noise), with
    ``A``, ``f``, ``phi`` unknown. The Fisher information of ``(A, phi, f)`` gives (Rife & Boorstyn 1974)

        var(f_hat) >= 6 / ((2 pi Ts)^2 * (A^2/s2) * M (M^2 - 1)).

    With the in-band SNR ``snr = A^2 / (s2 * bw / fs)``, ``A^2/s2 = snr * bw / fs`` and ``M = K N fs / bw``,
    so for ``M >> 1``

        CRB(f) = 6 bw^2 / ((2 pi)^2 * snr * K^3 * N^3)      [Hz^2], independent of fs.

    For SF7, 125 kHz, K = 8: sqrt(CRB) = 0.149 Hz at 20 dB and 0.470 Hz at 10 dB. The estimator (eq. 13 over
    all symbol pairs on the per-symbol dechirped amplitudes, then a least-squares line through the symbol
    phases) is efficient; eq. 13 over consecutive pairs alone would have variance K^3 / (6 (K-1)^2) = 1.74 x
    CRB. The lower check (RMSE >= 0.8 sqrt(CRB)) guards against a test that adds less noise than it claims.
    """
    x, cfo = clean_preambles
    rng = np.random.default_rng(99)
    k_sym, n = CFG.preamble_symbols, CFG.n_chips
    for snr_db in (10.0, 20.0, 30.0):
        est = estimate_cfo(_awgn(x, snr_db, rng), CFG)
        rmse = float(np.sqrt(np.mean((est - cfo) ** 2)))
        crb = np.sqrt(6 * CFG.bw_hz**2 / ((2 * np.pi) ** 2 * 10 ** (snr_db / 10) * k_sym**3 * n**3))
        assert rmse <= 10.0
        assert rmse >= 0.8 * crb
        if snr_db >= 20:
            assert rmse <= 2 * crb, f"{snr_db} dB: RMSE {rmse:.3f} Hz vs CRB {crb:.3f} Hz"


def test_cfo_estimate_stays_unbiased_at_low_snr(clean_preambles):
    x, cfo = clean_preambles
    est = estimate_cfo(_awgn(x, -5.0, np.random.default_rng(5)), CFG)
    err = est - cfo
    assert abs(err.mean()) < 1.0 and np.sqrt(np.mean(err**2)) < 10.0


def test_compensate_cfo_removes_the_offset_and_keeps_the_input():
    x = packet_waveform(CFG, cfo_hz=7_000.0, phase_rad=0.5)[: CFG.preamble_samples]
    before = x.copy()
    y = compensate_cfo(x, 7_000.0, CFG.fs_hz)
    np.testing.assert_array_equal(x, before)
    assert y.dtype == np.complex64 and y.shape == x.shape
    # unit phasors: the input's, the rotation's and the product's complex64 roundings against the reference's,
    # each within 2**-24 per component
    ref = packet_waveform(CFG, phase_rad=0.5)[: CFG.preamble_samples]
    np.testing.assert_allclose(y, ref, rtol=0, atol=4 * np.sqrt(2) * 2.0**-24)
    assert abs(float(estimate_cfo(y, CFG))) < 1e-3


def test_compensate_cfo_batches_with_one_offset_per_row(clean_preambles):
    x, cfo = clean_preambles
    y = compensate_cfo(x[:4], cfo[:4], CFG.fs_hz)
    assert y.shape == (4, CFG.preamble_samples) and y.dtype == np.complex64
    np.testing.assert_allclose(estimate_cfo(y, CFG), 0.0, atol=1e-3)
    wrong = compensate_cfo(x[:4], cfo[:4] + 100.0, CFG.fs_hz)  # negative control
    np.testing.assert_allclose(estimate_cfo(wrong, CFG), -100.0, atol=1e-3)


def test_bad_shapes_are_config_errors():
    with pytest.raises(ConfigError, match="at least 2"):
        estimate_cfo(np.zeros(1500, np.complex64), CFG)
    with pytest.raises(ConfigError, match="shape"):
        estimate_cfo(np.zeros((2, 2, 8192), np.complex64), CFG)
    with pytest.raises(ConfigError, match="cfo_hz"):
        compensate_cfo(np.zeros((3, 16), np.complex64), [1.0, 2.0], 1e6)
    with pytest.raises(ConfigError, match="fs_hz"):
        compensate_cfo(np.zeros(16, np.complex64), 1.0, 0.0)
