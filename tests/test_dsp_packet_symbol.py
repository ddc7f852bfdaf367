"""The packet-wide symbol estimate against its ground truth: the preamble up-chirp of the noiseless packet."""

import json
import pathlib

import numpy as np
import pytest

from lorarffi.dsp import packet_symbol
from lorarffi.dsp.chirp import packet_layout, packet_waveform, upchirp
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.packet_symbol import packet_symbol_estimate, packet_tail_samples, symbol_start_phase_rad
from lorarffi.errors import ConfigError

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
GRLORA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "grlora_sdr"
SPS = CFG.samples_per_symbol


def _impaired(payload, *, gain=0.08 - 0.05j, leak=0.03 + 0.02j, phase_rad=0.7):
    """A whole packet through IQ imbalance (image ``gain``) and carrier leakage, and its true preamble
    chirp."""
    x = packet_waveform(CFG, payload).astype(np.complex128)
    y = (x + gain * np.conj(x) + leak) * np.exp(1j * phase_rad)
    return y.astype(np.complex64), y[:SPS].astype(np.complex64)


def _aligned_error_db(est, truth):
    turn = np.vdot(est, truth)
    err = est * turn / abs(turn) - truth
    return 10 * np.log10(np.sum(np.abs(err) ** 2) / np.sum(np.abs(truth) ** 2))


def test_start_phase_is_the_shifted_base_chirps_phase():
    base = upchirp(CFG)
    for s in (0, 1, 8, 16, 55, 127):
        shifted = np.roll(upchirp(CFG, s), s * 8)  # symbol s moved back onto the base chirp
        turn = np.angle(np.vdot(base, shifted))
        assert np.allclose(shifted, base * np.exp(1j * turn), atol=1e-4)
        expected = symbol_start_phase_rad(s, CFG.n_chips)
        assert np.angle(np.exp(1j * (turn - expected))) == pytest.approx(0, abs=1e-4)


def test_noiseless_packet_gives_its_preamble_chirp_image_and_leakage_included(monkeypatch):
    rng = np.random.default_rng(3)
    payload = rng.integers(0, CFG.n_chips, 30)
    y, truth = _impaired(payload)
    est = packet_symbol_estimate(y, CFG)
    assert est.n_symbols == 8 + 2 + 30
    assert est.effective_symbols > 8 + 30 / 4
    # Each symbol's phase is first measured against the preamble's average, which the image and leakage bias
    # (-50 dB of error here); every refinement against the fitted model divides the error by about 6 (-8 dB).
    assert _aligned_error_db(est.symbol, truth) < -60
    errors = []
    for passes in (2, 5):
        monkeypatch.setattr(packet_symbol, "REFINEMENTS", passes)
        errors.append(_aligned_error_db(packet_symbol_estimate(y, CFG).symbol, truth))
    assert errors[1] < errors[0] - 10
    # a plain average of the shifted-back symbols smears the image and the leakage
    lay = packet_layout(CFG, 30)
    start = int(lay.payload_start)
    vals = payload
    rolled = [np.roll(y[start + j * SPS: start + (j + 1) * SPS], v * 8) for j, v in enumerate(vals)]
    turned = [r * np.exp(-1j * np.angle(np.vdot(truth, r))) for r in rolled]
    assert _aligned_error_db(np.mean(turned, axis=0), truth) > -40


def test_noise_falls_by_the_effective_number_of_symbols():
    rng = np.random.default_rng(4)
    payload = rng.integers(0, CFG.n_chips, 40)
    y, truth = _impaired(payload)
    n = 200
    sigma2 = 0.05  # per complex sample: the in-band SNR is 13 + 10 log10(1/0.05 * 125/1000) = 4 dB
    noise = np.sqrt(sigma2 / 2) * (rng.standard_normal((n, y.size)) + 1j * rng.standard_normal((n, y.size)))
    est = packet_symbol_estimate((y[None, :] + noise).astype(np.complex64), CFG)
    assert np.all(est.n_symbols == 50)
    turns = np.einsum("ns,s->n", est.symbol.conj(), truth)
    err = np.mean(np.abs(est.symbol * (turns / np.abs(turns))[:, None] - truth) ** 2)
    expected = sigma2 / np.mean(est.effective_symbols)
    # mean of 200 x 1024 squared errors: relative standard error well under 5 %; phase noise adds a little
    assert err == pytest.approx(expected, rel=0.1)
    assert expected < sigma2 / 8 / 2  # better than the preamble alone by more than 3 dB


def test_preamble_alone_and_noise_after_the_packet():
    rng = np.random.default_rng(5)
    y, truth = _impaired(rng.integers(0, CFG.n_chips, 6))
    alone = packet_symbol_estimate(y[: CFG.preamble_samples], CFG)
    assert alone.n_symbols == 8 and alone.effective_symbols == 8
    assert _aligned_error_db(alone.symbol, truth) < -80  # 8 identical float32 chirps: rounding only
    # 10 symbols of noise 20 dB below the packet after its end: the payload stops at its 6 symbols
    tail = 0.1 * (rng.standard_normal(10 * SPS) + 1j * rng.standard_normal(10 * SPS)) / np.sqrt(2)
    longer = np.concatenate([y, tail.astype(np.complex64)])
    est = packet_symbol_estimate(longer, CFG)
    assert est.n_symbols == 8 + 2 + 6
    assert packet_tail_samples(CFG, 6) == y.size - CFG.preamble_samples


def test_a_wrong_sync_word_keeps_the_preamble_average():
    rng = np.random.default_rng(6)
    x = packet_waveform(CFG, rng.integers(0, CFG.n_chips, 10), sync_word=0x34)
    est = packet_symbol_estimate(x, CFG)  # CFG expects 0x12
    assert est.n_symbols == 8 and est.effective_symbols == 8


def test_refuses_fractional_oversampling():
    with pytest.raises(ConfigError, match="integer oversampling"):
        packet_symbol_estimate(np.zeros(20000, np.complex64), LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1.1e6))


@pytest.mark.parametrize(
    "name, cfg, n_preamble",
    [
        ("sf8_bw125k_fs1M_sync12_pre8", LoRaConfig(sf=8, bw_hz=125e3, fs_hz=1e6, sync_word=0x12), 8),
        ("sf10_bw125k_fs250k_sync34_pre12", LoRaConfig(sf=10, bw_hz=125e3, fs_hz=250e3, sync_word=0x34), 12),
    ],
)
def test_an_independent_transmitters_packets_give_their_preamble_chirp(name, cfg, n_preamble):
    """gr-lora_sdr's packets (ideal: no noise, no CFO): every symbol of each packet is read and shifted back
    onto its preamble's up-chirp; the estimate is that chirp (float32 samples: far below -60 dB)."""
    from lorarffi.datasets.recording import open_recording

    meta = GRLORA / f"{name}.sigmf-meta"
    sps = cfg.samples_per_symbol
    with open_recording(str(meta)) as rec:
        for ann in json.loads(meta.read_text())["annotations"]:
            first = ann["core:sample_start"] + (n_preamble - cfg.preamble_symbols) * sps  # the last 8
            packet = rec.read(first, ann["core:sample_start"] + ann["core:sample_count"] - first)
            est = packet_symbol_estimate(packet, cfg)
            n_payload = (ann["core:sample_count"] - (n_preamble + 4.25) * sps) / sps
            assert n_payload == int(n_payload) > 0
            assert est.n_symbols == cfg.preamble_symbols + 2 + int(n_payload)
            assert _aligned_error_db(est.symbol, packet[:sps]) < -60


CFG10 = LoRaConfig(sf=10, bw_hz=125e3, fs_hz=500e3)


@pytest.mark.parametrize("clock_ppm, carrier_share", [(30.0, 0.1), (30.0, 0.0), (-20.0, 0.3)])
def test_a_drifting_packet_is_aligned_before_the_fit(monkeypatch, clock_ppm, carrier_share):
    """A 60-symbol SF10 packet (IQ imbalance, leakage) sampled by a clock ``clock_ppm`` off and whose carrier
    moves linearly through it (``carrier_share`` of the tone drift; 0 Hz at the preamble's centre): the drift
    and its timing share are recovered and the estimate is the preamble chirp at the preamble's centre."""
    from lorarffi.dsp.symbol_drift import shift_samples
    from lorarffi.sim.receiver import sample_clock_offset

    sps = CFG10.samples_per_symbol
    rng = np.random.default_rng(5)
    x = packet_waveform(CFG10, rng.integers(0, CFG10.n_chips, 60)).astype(np.complex128)
    y = ((x + (0.08 - 0.05j) * np.conj(x) + (0.03 + 0.02j)) * np.exp(0.7j)).astype(np.complex64)
    eps = clock_ppm * 1e-6
    timing_bins = -eps * CFG10.n_chips  # per symbol: a fast clock delays symbol t by eps * t * sps samples
    carrier_bins = carrier_share / (1 - carrier_share) * timing_bins
    rate_hz_per_s = carrier_bins * (CFG10.bw_hz / CFG10.n_chips) / (sps / CFG10.fs_hz)
    centre = CFG10.preamble_symbols / 2 * sps
    n = np.arange(y.size)
    carrier_phase = np.pi * rate_hz_per_s * ((n - centre) / CFG10.fs_hz) ** 2
    z = sample_clock_offset(y, clock_ppm) * np.exp(1j * carrier_phase)
    truth = shift_samples(y[:sps], -eps * centre)  # the preamble chirp as the clock delays it at the centre

    est = packet_symbol_estimate(z.astype(np.complex64), CFG10)
    assert est.n_symbols == 8 + 2 + 60
    assert est.drift_bins_per_symbol == pytest.approx(timing_bins + carrier_bins, rel=0.02)
    assert est.timing_share == pytest.approx(1 - carrier_share, abs=0.02)
    # what is left: the clock's stretch within each symbol (eps * sps = 0.12 samples at 30 ppm) and the
    # image's opposite drift the linear model leaves: measured -39 to -43 dB
    assert _aligned_error_db(est.symbol, truth) < -35
    monkeypatch.setattr(packet_symbol, "DRIFT_MIN_BINS", np.inf)  # the same packet without the alignment
    assert _aligned_error_db(packet_symbol_estimate(z.astype(np.complex64), CFG10).symbol, truth) > -20


OAT4CAT = GRLORA.parent / "oat4cat_lora433_sf11_bw500"


@pytest.mark.skipif(not OAT4CAT.is_dir(), reason="../shared/data is absent")
def test_real_packets_drift_and_agree_with_their_preamble(monkeypatch):
    """The three over-the-air SF11/500 kHz packets of one transmitter (8-bit receiver, resampled 2.4 -> 2
    MS/s): the tone moves 0.018 bins per symbol (8.6 ppm as timing, about 93 % of it timing) in every packet,
    and once that is undone the estimate from up to 164 symbols is the preamble's average again (measured
    -34.8 to -43.8 dB; without the alignment -7 to -15 dB)."""
    from scipy import signal

    from lorarffi.datasets.recording import open_recording
    from lorarffi.dsp import detect
    from lorarffi.dsp.cfo import compensate_cfo
    from lorarffi.dsp.coherent import coherent_symbol_average

    parts = []
    for path in sorted(OAT4CAT.glob("oat4cat_signal_000*.wav")):
        with open_recording(str(path)) as rec:
            parts.append(rec.read(0, rec.n_samples))
    y = signal.resample_poly(np.concatenate(parts), 5, 6).astype(np.complex64)
    cfg = LoRaConfig(sf=11, bw_hz=500e3, fs_hz=2.0e6, sync_word=0x13)
    packets = detect(y, cfg)
    assert len(packets) == 3
    sps = cfg.samples_per_symbol
    rows = []
    for p in packets:
        n = min(y.size - p.fingerprint_start, cfg.preamble_samples + int((4.25 + 200) * sps))
        rows.append(compensate_cfo(y[p.fingerprint_start : p.fingerprint_start + n], p.cfo_hz, cfg.fs_hz))
    for row in rows:
        est = packet_symbol_estimate(row, cfg)
        assert est.n_symbols >= 40
        assert est.drift_bins_per_symbol * 1e6 / cfg.n_chips == pytest.approx(-8.6, abs=0.4)
        assert 0.85 <= est.timing_share <= 0.98
        average = coherent_symbol_average(row[: cfg.preamble_samples], sps)
        assert _aligned_error_db(est.symbol, average) < -30
    monkeypatch.setattr(packet_symbol, "DRIFT_MIN_BINS", np.inf)
    assert _aligned_error_db(packet_symbol_estimate(rows[0], cfg).symbol,
                             coherent_symbol_average(rows[0][: cfg.preamble_samples], sps)) > -20
