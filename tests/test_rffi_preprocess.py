"""The dechirp check of stored rows and what preprocessing does with rows that are not preambles.

Truth: simulated preambles (known CFO, SNR, the simulator's multipath channel), LoRa payload symbols made by
``modulate`` (random values, known not to be preambles), noise, a tone, and the packets of an independent
transmitter (gr-lora_sdr, ../shared/data; skipped when absent) cut at the preamble and after the frame sync.
"""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import pytest

from lorarffi.dsp.cfo import estimate_cfo
from lorarffi.dsp.chirp import modulate
from lorarffi.dsp.coherent import coherent_symbol_average
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.normalize import rms_normalize
from lorarffi.dsp.packet_symbol import packet_tail_samples
from lorarffi.errors import ConfigError
from lorarffi.rffi.preprocess import UPCHIRP_SCORE_MIN, preprocess_preambles, upchirp_score
from lorarffi.sim import Session, make_fleet, simulate_preamble_set
from lorarffi.sim.channel import add_awgn

GR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "grlora_sdr"

CONFIGS = [
    LoRaConfig(),  # SF7, 125 kHz, 1 MS/s: 8x oversampling
    LoRaConfig(sf=7, bw_hz=125e3, fs_hz=125e3),  # no oversampling: one bandwidth is the whole FFT
    LoRaConfig(sf=9, bw_hz=250e3, fs_hz=1e6),
]


def _preambles(cfg: LoRaConfig, snr_db: float, n_per_device: int = 8, seed: int = 0):
    fleet = make_fleet(4, seed=seed, spread=3.0)
    return simulate_preamble_set(
        fleet,
        cfg,
        n_per_device,
        session=Session(day=2, minutes_since_power_on=0, place=2),  # cold start, another multipath channel
        rng=np.random.default_rng(seed),
        snr_db=snr_db,
    )


def _payload_rows(cfg: LoRaConfig, n: int, rng: np.random.Generator, *, step: int = 1) -> np.ndarray:
    """Rows of random LoRa symbols (multiples of ``step``: 4 = the reduced-rate header), a random CFO of up
    to 20 kHz and 20 dB in-band SNR: what a file cut after the frame sync holds."""
    values = step * rng.integers(0, cfg.n_chips // step, (n, cfg.preamble_symbols))
    rows = np.stack([modulate(v, cfg)[: cfg.preamble_samples] for v in values])
    t_s = np.arange(rows.shape[1]) / cfg.fs_hz
    rows = rows * np.exp(2j * np.pi * rng.uniform(-20e3, 20e3, (n, 1)) * t_s).astype(np.complex64)
    return add_awgn(rows, 20.0, reference="in_band", rng=rng, bw_hz=cfg.bw_hz, fs_hz=cfg.fs_hz)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"sf{c.sf}_bw{c.bw_hz:g}_fs{c.fs_hz:g}")
def test_preambles_pass_at_0_db_while_payload_noise_and_tones_fail(cfg: LoRaConfig) -> None:
    rng = np.random.default_rng(1)
    ps = _preambles(cfg, 0.0)
    assert np.all(upchirp_score(ps.preambles, cfg) >= UPCHIRP_SCORE_MIN)
    # random payload symbols and reduced-rate header symbols: at most a few of 8 land on one bin
    for step in (1, 4):
        assert np.all(upchirp_score(_payload_rows(cfg, 200, rng, step=step), cfg) < UPCHIRP_SCORE_MIN)
    noise = (rng.standard_normal((200, cfg.preamble_samples, 2)) @ [1, 1j]).astype(np.complex64)
    assert np.all(upchirp_score(noise, cfg) < UPCHIRP_SCORE_MIN)
    # a tone is one bin before dechirping, a chirp spread over the band after: no dominant peak
    t_s = np.arange(cfg.preamble_samples) / cfg.fs_hz
    tone = np.exp(2j * np.pi * rng.uniform(-50e3, 50e3, (20, 1)) * t_s).astype(np.complex64)
    assert np.all(upchirp_score(tone, cfg) == 0.0)
    # all-zero rows (padding) have no peak at all
    assert upchirp_score(np.zeros(cfg.preamble_samples, np.complex64), cfg) == 0.0


def test_preambles_read_at_other_lora_parameters_fail() -> None:
    ps = _preambles(LoRaConfig(sf=8, bw_hz=125e3, fs_hz=1e6), 10.0)  # SF8 rows of 16,384 samples
    # another chirp rate per sample (SF8 at 250 kHz, 1 MS/s would not do: the same samples, CFO scaled)
    for other in (LoRaConfig(sf=7), LoRaConfig(sf=9), LoRaConfig(sf=8, bw_hz=250e3, fs_hz=1e6)):
        assert np.all(upchirp_score(ps.preambles, other) < UPCHIRP_SCORE_MIN)
    assert np.all(upchirp_score(ps.preambles, LoRaConfig(sf=8, bw_hz=250e3, fs_hz=2e6)) == 1.0)


def test_mixed_rows_keep_preambles_as_before_and_leave_the_rest_alone(caplog) -> None:
    cfg = LoRaConfig()
    ps = _preambles(cfg, 5.0)
    bad = _payload_rows(cfg, 5, np.random.default_rng(2))
    rows = np.concatenate([ps.preambles[:10], bad, ps.preambles[10:15]])
    is_pre = np.r_[np.ones(10, bool), np.zeros(5, bool), np.ones(5, bool)]
    with caplog.at_level(logging.WARNING, logger="lorarffi.rffi.preprocess"):
        pre = preprocess_preambles(rows, cfg, source="mixed.h5")
    np.testing.assert_array_equal(pre.is_preamble, is_pre)
    assert pre.n_not_preamble == 5
    # rows that are not preambles: no CFO, not compensated, only normalised (same kernel, same rows: exact)
    assert np.all(np.isnan(pre.cfo_hz[~is_pre]))
    np.testing.assert_array_equal(pre.iq[~is_pre], rms_normalize(bad))
    # the preambles: their CFO (against the simulator's truth: the estimator is within a tenth of a bin,
    # bw / 2**sf / 10 = 98 Hz, at this SNR) and the same rows as when preprocessed alone, up to float32
    # rounding of unit-RMS samples (the compensation's phase is computed in float64: a few ulps of 1)
    good = np.r_[0:10, 10:15]
    assert np.all(np.abs(pre.cfo_hz[is_pre] - ps.cfo_hz[good]) < cfg.bw_hz / cfg.n_chips / 10)
    alone = preprocess_preambles(ps.preambles[good], cfg)
    # the same estimator on the same rows, batched with others: float64 rounding at most (1e-12 = 4500 ulps)
    np.testing.assert_allclose(pre.cfo_hz[is_pre], alone.cfo_hz, rtol=1e-12)
    np.testing.assert_allclose(pre.iq[is_pre], alone.iq, rtol=0, atol=8 * np.finfo(np.float32).eps)
    # one warning line: how many of how many, what it means, what to do
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and "\n" not in lines[0]
    head = "mixed.h5: 5 of 20 rows are not LoRa preamble up-chirps at SF7, 125 kHz, 1 MS/s (dechirp check)"
    assert lines[0].startswith(head)
    assert "not used by the CFO gate" in lines[0] and "--sf/--bw-hz/--fs-hz" in lines[0]


def test_rows_that_are_all_preambles_are_preprocessed_as_the_estimator_says(caplog) -> None:
    cfg = LoRaConfig()
    ps = _preambles(cfg, 0.0)
    with caplog.at_level(logging.WARNING, logger="lorarffi.rffi.preprocess"):
        pre = preprocess_preambles(ps.preambles, cfg)
        one = preprocess_preambles(ps.preambles[3], cfg)
    assert pre.n_not_preamble == 0 and not caplog.records
    np.testing.assert_array_equal(pre.cfo_hz, estimate_cfo(ps.preambles, cfg))  # same call, same rows
    assert one.iq.shape == (cfg.preamble_samples,) and one.cfo_hz.shape == () and bool(one.is_preamble)


@pytest.mark.skipif(not GR.is_dir(), reason="../shared/data/grlora_sdr is absent")
@pytest.mark.parametrize(
    ("name", "cfg", "n_pre"),
    [
        ("sf8_bw125k_fs1M_sync12_pre8", LoRaConfig(sf=8, bw_hz=125e3, fs_hz=1e6), 8),
        ("sf7_bw500k_fs2M_sync12_pre8", LoRaConfig(sf=7, bw_hz=500e3, fs_hz=2e6), 8),
        ("sf10_bw125k_fs250k_sync34_pre12", LoRaConfig(sf=10, bw_hz=125e3, fs_hz=250e3), 12),
    ],
)
def test_an_independent_transmitters_packets_pass_at_the_preamble_and_fail_after_the_frame_sync(
    name: str, cfg: LoRaConfig, n_pre: int
) -> None:
    meta = json.loads((GR / f"{name}.sigmf-meta").read_text())
    iq = np.fromfile(GR / f"{name}.sigmf-data", np.complex64)
    sps, n = cfg.samples_per_symbol, cfg.preamble_samples
    starts = [a["core:sample_start"] for a in meta["annotations"]]
    # the fingerprint window: the last 8 up-chirps before the sync word (core:sample_start: the first one)
    pre = np.stack([iq[s + (n_pre - 8) * sps :][:n] for s in starts])
    # after the frame sync: 2 sync-word symbols and 2.25 down-chirps, then the header (8 symbols at SF-2 bits)
    header = np.stack([iq[s + int((n_pre + 4.25) * sps) :][:n] for s in starts])
    assert np.all(upchirp_score(pre, cfg) == 1.0)
    assert np.all(upchirp_score(header, cfg) < UPCHIRP_SCORE_MIN)
    out = preprocess_preambles(header, cfg)
    assert out.n_not_preamble == len(starts) and np.all(np.isnan(out.cfo_hz))


def _sim_packets(snr_db: float, payload_symbols: int):
    fleet = make_fleet(2, seed=8, spread=3)
    return simulate_preamble_set(
        fleet, LoRaConfig(), 6, session=Session(day=1, minutes_since_power_on=0.0, place=1),
        rng=np.random.default_rng(9), snr_db=snr_db, payload_symbols=payload_symbols,
    )


def _aligned_error(rows, truth):
    turn = np.einsum("ns,ns->n", rows.conj(), truth)
    return np.mean(np.abs(rows * (turn / np.abs(turn))[:, None] - truth) ** 2, axis=1)


def test_whole_packets_give_a_cleaner_preamble_than_the_preamble_alone() -> None:
    cfg = LoRaConfig()
    noisy, clean = _sim_packets(5.0, 30), _sim_packets(300.0, 30)  # same draws, noise apart
    assert noisy.preambles.shape[1] == cfg.preamble_samples + packet_tail_samples(cfg, 30)
    # the preamble without noise: CFO removed, unit RMS
    truth = preprocess_preambles(clean.preambles, cfg, packet_symbols=False).iq
    alone = preprocess_preambles(noisy.preambles, cfg, packet_symbols=False)
    whole = preprocess_preambles(noisy.preambles, cfg, packet_symbols=True)
    assert whole.iq.shape == alone.iq.shape == truth.shape
    cut = noisy.preambles[:, : cfg.preamble_samples]
    np.testing.assert_array_equal(alone.iq, preprocess_preambles(cut, cfg).iq)
    np.testing.assert_array_equal(alone.iq, preprocess_preambles(noisy.preambles, cfg).iq)  # the default
    sps = cfg.samples_per_symbol
    symbols = whole.iq.reshape(len(whole.iq), cfg.preamble_symbols, sps)
    assert np.array_equal(symbols, np.broadcast_to(symbols[:, :1], symbols.shape))  # one symbol repeated
    np.testing.assert_array_equal(whole.cfo_hz, alone.cfo_hz)
    # Error of one symbol against the true (noiseless) preamble's first symbol; the preamble alone's is its
    # coherent average's. 8 + 2 + 30 symbols, about a third of the 30 counting fully: > 3 dB less noise.
    first = truth[:, :sps]
    e_alone = _aligned_error(coherent_symbol_average(alone.iq, sps), first)
    e_whole = _aligned_error(symbols[:, 0], first)
    assert np.mean(e_whole) < np.mean(e_alone) / 2


def test_whole_packets_need_the_cfo_removed() -> None:
    with pytest.raises(ConfigError, match="packet_symbols"):
        preprocess_preambles(np.ones((1, LoRaConfig().preamble_samples), np.complex64), LoRaConfig(),
                             compensate=False, packet_symbols=True)
