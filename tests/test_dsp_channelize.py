"""The channelizer: streaming equals one-shot, equals the textbook mix-filter-decimate, keeps channels apart
and maps channel sample indices back to the wideband stream."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lorarffi.dsp import LoRaConfig, StreamDetector, packet_waveform
from lorarffi.dsp.channelize import (
    Channelizer,
    channel_filter,
    channel_to_input_index,
    choose_decimation,
    packet_to_input,
)
from lorarffi.errors import ConfigError

FS_HZ = 1e6
CENTER_HZ = 868.3e6
CHANNELS_HZ = (868.1e6, 868.3e6, 868.5e6)
EPS32 = float(np.finfo(np.float32).eps)


def _noise(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)


def _run(ch: Channelizer, x: np.ndarray, cuts: list[int]) -> np.ndarray:
    parts = [ch.process(piece) for piece in np.split(x, cuts)]
    return np.concatenate([*parts, ch.flush()], axis=1)


@pytest.mark.parametrize("decimation", [1, 3, 4])
def test_streaming_is_identical_to_one_shot_and_to_the_textbook_formula(decimation):
    n = 60_001
    x = _noise(n, 1)
    one = _run(Channelizer(FS_HZ, CENTER_HZ, CHANNELS_HZ, decimation=decimation), x, [])
    cuts = sorted(np.random.default_rng(2).choice(np.arange(1, n), 40, replace=False).tolist())
    chunked = _run(Channelizer(FS_HZ, CENTER_HZ, CHANNELS_HZ, decimation=decimation), x, cuts + [n, n])
    # same blocks at the same absolute positions whatever the chunking: the same kernels on the same data
    np.testing.assert_array_equal(chunked, one)
    assert one.shape == (3, math.ceil(n / decimation)) and one.dtype == np.complex64

    # the definition: mix down (phase 0 at sample 0), zero-phase FIR, keep every D-th sample, in float64
    ch = Channelizer(FS_HZ, CENTER_HZ, CHANNELS_HZ, decimation=decimation)
    h = channel_filter(FS_HZ, decimation, 125e3, spacing_hz=200e3)
    g = (h.size - 1) // 2
    t = np.arange(n)
    ref = np.array([
        np.convolve(x * np.exp(-2j * np.pi * (f - CENTER_HZ) / FS_HZ * t), h)[g : g + n][::decimation]
        for f in CHANNELS_HZ
    ])
    # float32 FFT, product, fold and inverse FFT: each of the 2 log2(n_fft) butterfly stages and the few
    # other roundings adds at most a few eps relative to the block's largest value, which the filter's
    # L1 norm bounds in terms of max|x|
    bound = (2 * math.log2(ch._n_fft) + 4) * EPS32 * np.abs(x).max() * np.abs(h).sum()
    assert np.abs(one - ref).max() <= bound


def test_a_tone_lands_on_its_channel_only():
    ch = Channelizer(FS_HZ, CENTER_HZ, CHANNELS_HZ)
    assert (ch.decimation, ch.fs_out_hz) == (4, 250e3)
    t = np.arange(200_000)
    for c, f in enumerate(CHANNELS_HZ):
        for cfo_hz in (-25e3, 0.0, 25e3):  # the edge of the CFO margin is still in the pass band
            x = np.exp(2j * np.pi * (f - CENTER_HZ + cfo_hz) / FS_HZ * t).astype(np.complex64)
            y = _run(Channelizer(FS_HZ, CENTER_HZ, CHANNELS_HZ), x, [77_777])[:, 5000:-5000]
            mag = np.abs(y).mean(axis=1)
            assert abs(mag[c] - 1) < 2e-3  # pass-band ripple of a 60 dB Kaiser design is about 1e-3
            others = np.delete(mag, c)
            assert np.all(others < 10 ** (-55 / 20))  # stop band 60 dB down, a few dB of slack for the edge
            # the tone arrives at its CFO on its own channel (mixing is exact, phase continuous)
            ph = np.unwrap(np.angle(y[c]))
            slope_hz = (ph[-1] - ph[0]) / (2 * np.pi * (y.shape[1] - 1) / ch.fs_out_hz)
            assert abs(slope_hz - cfo_hz) < 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_packet_found_on_a_channel_maps_back_to_its_start_in_the_wideband_stream(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(3))
    sf = int(rng.choice([7, 8, 9]))
    start = 20_000 + float(rng.uniform(0, 10_000))  # exact (fractional) first preamble sample
    cfo_hz = float(rng.uniform(-15e3, 15e3))
    wide = LoRaConfig(sf=sf, bw_hz=125e3, fs_hz=FS_HZ)
    pk = packet_waveform(wide, rng.integers(0, 2**sf, 10), cfo_hz=cfo_hz + CHANNELS_HZ[c] - CENTER_HZ,
                         t0_s=-(start - math.floor(start)) / FS_HZ)
    n = math.floor(start) + pk.size + 40_000
    x = 0.05 * _noise(n, 10 + seed)
    x[math.floor(start) : math.floor(start) + pk.size] += pk.astype(np.complex64)
    ch = Channelizer(FS_HZ, CENTER_HZ, CHANNELS_HZ)
    y = _run(ch, x, [123_456 % n])
    found = {}
    for k in range(3):
        det = StreamDetector(LoRaConfig(sf=sf, bw_hz=125e3, fs_hz=ch.fs_out_hz))
        found[k] = det.process(y[k]) + det.flush()
    assert [len(found[k]) for k in range(3)] == [int(k == c) for k in range(3)]
    p = found[c][0]
    assert abs(p.cfo_hz - cfo_hz) < 20.0
    # the detector's start is within half a sample of its own (channel) rate; the mapping is exact, so
    # back in the wideband stream the error is at most half a channel sample plus the detector's own error
    # (one channel sample in all): ``decimation`` input samples
    mapped = channel_to_input_index(p.start + p.start_frac, ch.decimation)
    assert abs(mapped - start) <= ch.decimation
    # the packet moved to the input stream: the same instant, start the nearest sample, fs_hz the input's
    q = packet_to_input(p, ch.decimation, FS_HZ)
    assert q.start + q.start_frac == pytest.approx(mapped, abs=1e-9) and abs(q.start_frac) <= 0.5
    assert q.fs_hz == FS_HZ and q.fingerprint_start == round(p.fingerprint_start * ch.decimation)


def test_choose_decimation_and_bad_plans():
    assert choose_decimation(1e6, 125e3) == 4
    assert choose_decimation(1e6, 250e3) == 2
    assert choose_decimation(2e6, 125e3) == 8
    assert channel_to_input_index(np.array([1, 2.5]), 4).tolist() == [4.0, 10.0]
    with pytest.raises(ConfigError, match="does not fit"):
        Channelizer(FS_HZ, CENTER_HZ, [868.8e6])
    with pytest.raises(ConfigError, match="twice"):
        Channelizer(FS_HZ, CENTER_HZ, [868.1e6, 868.1e6])
    with pytest.raises(ConfigError, match="no room"):
        Channelizer(FS_HZ, CENTER_HZ, [868.2e6, 868.3e6])  # 100 kHz apart: 125 kHz channels overlap
