"""LoRaConfig validation and chirp synthesis against the analytic chirp."""

from __future__ import annotations

import numpy as np
import pytest

from lorarffi.dsp import (
    LoRaConfig,
    downchirp,
    modulate,
    packet_layout,
    packet_waveform,
    sync_word_symbols,
    upchirp,
)
from lorarffi.errors import ConfigError


def _dechirp_bins(x: np.ndarray, cfg: LoRaConfig) -> int:
    osr = int(round(cfg.oversampling))
    return int(np.argmax(np.abs(np.fft.fft((x * downchirp(cfg))[::osr]))))


def test_config_derived_sizes():
    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    assert cfg.samples_per_symbol == 1024 and cfg.preamble_samples == 8192
    assert cfg.fine_cfo_range_hz == pytest.approx(488.28125)
    assert LoRaConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sf": 6}, "sf=6"),
        ({"bw_hz": 200e3}, "bw_hz=200000"),
        ({"fs_hz": 100e3}, "fs_hz=100000"),
        ({"sync_word": 300}, "sync_word=300"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LoRaConfig(**kwargs)


def test_non_integer_rate_maps_to_integer_oversampling():
    cfg = LoRaConfig(sf=11, bw_hz=500e3, fs_hz=2.4e6)
    assert not cfg.is_integer_oversampling
    assert cfg.integer_oversampling().fs_hz == 2e6


def test_upchirp_matches_analytic_phase():
    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    t = np.arange(cfg.samples_per_symbol) / cfg.fs_hz
    T = cfg.symbol_duration_s
    ref = np.exp(1j * 2 * np.pi * (-cfg.bw_hz / 2 * t + cfg.bw_hz / (2 * T) * t**2))  # P1 eq. 2
    # the float64 phasor rounded to complex64: each component within 2**-24 of it
    np.testing.assert_allclose(upchirp(cfg), ref, rtol=0, atol=np.sqrt(2) * 2.0**-24)


@pytest.mark.parametrize("sf", [7, 9, 12])
def test_modulated_symbols_dechirp_to_their_value(sf):
    cfg = LoRaConfig(sf=sf, bw_hz=125e3, fs_hz=250e3)
    rng = np.random.default_rng(sf)
    symbols = rng.integers(0, cfg.n_chips, 5)
    x = modulate(symbols, cfg)
    sps = cfg.samples_per_symbol
    got = [_dechirp_bins(x[k * sps : (k + 1) * sps], cfg) for k in range(5)]
    assert got == list(symbols)


def test_packet_is_phase_continuous_with_sync_and_sfd():
    cfg = LoRaConfig(sf=8, bw_hz=125e3, fs_hz=1e6, sync_word=0x34)
    x = packet_waveform(cfg, [3, 200])
    lay = packet_layout(cfg, 2)
    assert x.size == lay.stop
    sps = cfg.samples_per_symbol
    s1, s2 = sync_word_symbols(0x34)
    assert (s1, s2) == (24, 32)
    assert _dechirp_bins(x[int(lay.sync_start) : int(lay.sync_start) + sps], cfg) == s1
    assert _dechirp_bins(x[int(lay.sync_start) + sps : int(lay.sfd_start)], cfg) == s2
    # SFD: multiplying by an up-chirp turns a down-chirp into a tone at DC
    sfd = x[int(lay.sfd_start) : int(lay.sfd_start) + sps] * upchirp(cfg)
    assert int(np.argmax(np.abs(np.fft.fft(sfd[:: int(cfg.oversampling)])))) == 0
    step = np.abs(np.diff(np.unwrap(np.angle(x.astype(np.complex128)))))
    assert step.max() <= 2 * np.pi * (cfg.bw_hz / 2) / cfg.fs_hz * 1.01  # no phase jumps anywhere


def test_packet_cfo_is_exact_mean_instantaneous_frequency():
    cfg = LoRaConfig()
    x = packet_waveform(cfg, cfo_hz=1234.5).astype(np.complex128)
    sps = cfg.samples_per_symbol
    f = np.angle(x[1 : sps + 1] * np.conj(x[:sps])) * cfg.fs_hz / (2 * np.pi)
    # paper_notes §15 test vector. The mean telescopes to (last phase - first phase) / sps: complex64 samples
    # carry phases within 2**-24 rad, so 2 * 2**-24 * fs / (2 pi sps) = 1.9e-5 Hz
    assert f.mean() == pytest.approx(1234.5, abs=2 * 2.0**-24 * cfg.fs_hz / (2 * np.pi * sps))


def test_fractional_delay_shifts_the_packet():
    cfg = LoRaConfig()
    a = packet_waveform(cfg, n_samples=3000)
    b = packet_waveform(cfg, t0_s=-100 / cfg.fs_hz, n_samples=3100)
    assert np.all(b[:100] == 0)
    # the same float64 phases up to a few ulps, rounded to complex64: at most one rounding apart per component
    np.testing.assert_allclose(b[100:], a, rtol=0, atol=2 * np.sqrt(2) * 2.0**-24)
