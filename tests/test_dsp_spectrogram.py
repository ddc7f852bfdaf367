"""Spectrograms against the authors' recipe (paper_notes §5, re-implemented here per packet with scipy),
analytic truths (exact-bin tones, amplitude ramps), invariances and the zero guard."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import wave

import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lorarffi.dsp import LoRaConfig, channel_independent_spectrogram, packet_waveform, spectrogram
from lorarffi.dsp.spectrogram import crop_rows, stft_frame_count
from lorarffi.errors import ConfigError

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
TOL = 1e-3  # the parity bound (float32 output vs the float64 recipe)


def authors_channel_ind_spectrogram(x: np.ndarray, n_fft: int = 256, hop: int = 128,
                                    crop: tuple[float, float] | None = (0.3, 0.7)) -> np.ndarray:
    """The TIFS repo's ``ChannelIndSpectrogram`` for one packet, as paper_notes §5 gives it (float64)."""
    x = x / np.sqrt(np.mean(np.abs(x) ** 2))
    _, _, s = scipy.signal.stft(x, window="boxcar", nperseg=n_fft, noverlap=n_fft - hop, nfft=n_fft,
                                return_onesided=False, padded=False, boundary=None)
    s = np.fft.fftshift(s, axes=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = s[:, 1:] / s[:, :-1]                                   # no epsilon, as the authors
        a = np.log10(np.abs(q) ** 2)
    if crop is not None:
        a = a[round(n_fft * crop[0]):round(n_fft * crop[1])]
    return a


def reference_spectrogram(x: np.ndarray, n_fft: int = 256, hop: int = 128,
                          crop: tuple[float, float] | None = None) -> np.ndarray:
    """log10 |STFT|^2 of the RMS-normalised packet with the same scipy call (the INFOCOM spectrogram)."""
    x = x / np.sqrt(np.mean(np.abs(x) ** 2))
    _, _, s = scipy.signal.stft(x, window="boxcar", nperseg=n_fft, noverlap=n_fft - hop, nfft=n_fft,
                                return_onesided=False, padded=False, boundary=None)
    a = np.log10(np.abs(np.fft.fftshift(s, axes=0)) ** 2)
    if crop is not None:
        a = a[round(n_fft * crop[0]):round(n_fft * crop[1])]
    return a


def per_packet(fn, x: np.ndarray, **kw) -> np.ndarray:
    return np.stack([fn(row.astype(np.complex128), **kw) for row in x])


def random_packets(rng: np.random.Generator, n: int, length: int = 8192) -> np.ndarray:
    scale = rng.uniform(0.01, 100.0, (n, 1)) * np.exp(2j * np.pi * rng.uniform(size=(n, 1)))
    x = (rng.standard_normal((n, length)) + 1j * rng.standard_normal((n, length))) * scale
    return x.astype(np.complex64)


def chirp_packets(rng: np.random.Generator, snr_db: float | None) -> np.ndarray:
    """Preambles (8 up-chirps, SF7, 125 kHz, 1 MS/s) of several CFOs, phases and timing offsets."""
    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    rows = []
    offsets = [(0.0, 0.0), (1234.5, 0.0), (-7_000.0, 3.3e-6), (19_000.0, -0.5e-6), (-15_000.0, 1e-4)]
    for cfo_hz, t0_s in offsets:
        rows.append(packet_waveform(cfg, cfo_hz=cfo_hz, phase_rad=rng.uniform(0, 2 * np.pi), t0_s=t0_s,
                                    n_samples=cfg.preamble_samples))
    x = np.stack(rows)
    if snr_db is not None:
        noise = rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape)
        x = x + noise * np.sqrt(10 ** (-snr_db / 10) / 2)
    return x.astype(np.complex64)


# --- parity with the authors' recipe ---------------------------------------------------------------------

def test_channel_independent_spectrogram_matches_authors_recipe_on_random_packets():
    x = random_packets(np.random.default_rng(1), 40)
    out = channel_independent_spectrogram(x)
    assert out.shape == (40, 102, 62) and out.dtype == np.float32
    ref = per_packet(authors_channel_ind_spectrogram, x)
    assert np.abs(out - ref).max() <= TOL
    np.testing.assert_allclose(channel_independent_spectrogram(x, workers=2), out, atol=1e-5)


@pytest.mark.parametrize("snr_db", [None, 20.0, 0.0])
def test_channel_independent_spectrogram_matches_authors_recipe_on_chirp_preambles(snr_db):
    x = chirp_packets(np.random.default_rng(2), snr_db)
    out = channel_independent_spectrogram(x)
    ref = per_packet(authors_channel_ind_spectrogram, x)
    assert np.isfinite(ref).all()
    assert np.abs(out - ref).max() <= TOL
    # Negative control: different CFOs give different spectrograms (the test sees the signal, not just zeros).
    assert np.abs(out[1] - out[2]).mean() > 0.1


def test_spectrogram_matches_scipy_stft_of_the_normalised_packet():
    rng = np.random.default_rng(3)
    x = np.concatenate([random_packets(rng, 10), chirp_packets(rng, 10.0)])
    out = spectrogram(x)
    assert out.shape == (15, 256, 63) and out.dtype == np.float32
    assert np.abs(out - per_packet(reference_spectrogram, x)).max() <= TOL
    cropped = spectrogram(x, crop=(0.3, 0.7))
    assert cropped.shape == (15, 102, 63)
    np.testing.assert_array_equal(cropped, out[:, 77:179])


@pytest.mark.skipif(not (DATA / "oat4cat_lora433_sf11_bw500" / "oat4cat_signal_0000.wav").exists(),
                    reason="shared recordings absent")
def test_channel_independent_spectrogram_matches_authors_recipe_on_a_real_recording():
    """Over-the-air SF11/500 kHz capture (8-bit I/Q WAV, 2.4 MS/s): 8192-sample windows, noise and packet."""
    with wave.open(str(DATA / "oat4cat_lora433_sf11_bw500" / "oat4cat_signal_0000.wav"), "rb") as w:
        u8 = np.frombuffer(w.readframes(w.getnframes()), dtype=np.uint8)
    iq = ((u8[0::2] - 127.5) + 1j * (u8[1::2] - 127.5)).astype(np.complex64)
    n = iq.size // 8192
    x = iq[: n * 8192].reshape(n, 8192)
    out = channel_independent_spectrogram(x)
    ref = per_packet(authors_channel_ind_spectrogram, x)
    assert n >= 30 and np.isfinite(ref).all()
    assert np.abs(out - ref).max() <= TOL
    # The packet (after ~44 ms) and the receiver noise before it are told apart: the chirps' ratios vary more.
    spread = out.std(axis=(1, 2))
    assert spread[-5:].mean() != pytest.approx(spread[:5].mean(), rel=0.05)


@pytest.mark.parametrize(("length", "n_fft", "hop", "crop", "shape"), [
    (8192, 256, 128, (0.3, 0.7), (102, 62)),
    (4096, 256, 128, (0.3, 0.7), (102, 30)),
    (8192, 128, 64, (0.3, 0.7), (52, 126)),          # receiverAgnostic code (paper_notes §15)
    (8192, 64, 32, None, (64, 254)),                  # P3 code (paper_notes §15)
    (1000, 255, 100, (0.25, 0.75), (127, 7)),         # odd FFT size, hop not dividing the frame
    (384, 256, 128, None, (256, 1)),                  # the shortest input: two frames
])
def test_shapes_and_values_for_other_lengths_and_parameters(length, n_fft, hop, crop, shape):
    x = random_packets(np.random.default_rng(length + n_fft), 3, length)
    out = channel_independent_spectrogram(x, n_fft=n_fft, hop=hop, crop=crop)
    assert out.shape == (3, *shape)
    ref = per_packet(authors_channel_ind_spectrogram, x, n_fft=n_fft, hop=hop, crop=crop)
    assert np.abs(out - ref).max() <= TOL
    spec = spectrogram(x, n_fft=n_fft, hop=hop, crop=crop)
    assert spec.shape == (3, shape[0], shape[1] + 1)
    assert np.abs(spec - per_packet(reference_spectrogram, x, n_fft=n_fft, hop=hop, crop=crop)).max() <= TOL


def test_frame_count_and_crop_rows_follow_paper_notes():
    assert stft_frame_count(8192) == 63
    assert stft_frame_count(255) == 0
    assert crop_rows(256, (0.3, 0.7)) == (77, 179)
    assert crop_rows(128, (0.3, 0.7)) == (38, 90)


# --- analytic truths -------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [-51, -16, 0, 7, 50])
def test_exact_bin_tone_gives_zero_in_its_row(k):
    """A tone at k * fs / n_fft has the same |S| in every frame: its row of the ratio is log10(1) = 0."""
    n = np.arange(8192)
    x = (3.0 * np.exp(2j * np.pi * k * n / 256 + 0.7j)).astype(np.complex64)
    out = channel_independent_spectrogram(x)
    row = 128 + k - 77                                  # shifted row 128 + k, minus the crop start
    assert np.abs(out[row]).max() < 1e-5
    ref = authors_channel_ind_spectrogram(x.astype(np.complex128))
    assert np.abs(ref[row]).max() < 1e-5
    # The other rows hold rounding noise only; the floor (120 dB below the tone) makes them exactly zero.
    assert np.count_nonzero(np.delete(out, row, axis=0)) == 0
    # And the uncropped spectrogram puts the tone in row 128 + k (lowest frequency first) at unit power.
    spec = spectrogram(x)
    assert np.all(spec.argmax(axis=0) == 128 + k)
    np.testing.assert_allclose(spec[128 + k], 0.0, atol=1e-5)


def test_amplitude_ramp_on_an_exact_bin_tone_gives_the_analytic_ratio():
    """x[n] = (1 + n/L) e^{j 2 pi 5 n / 256}: |S_m| at the tone bin is sum_{n<256} (1 + (128 m + n)/L)."""
    length, k = 8192, 5
    n = np.arange(length)
    x = ((1 + n / length) * np.exp(2j * np.pi * k * n / 256)).astype(np.complex64)
    m = np.arange(63)
    mag = 256 + (256 * 128 * m + 255 * 256 / 2) / length
    expected = 2 * np.log10(mag[1:] / mag[:-1])
    out = channel_independent_spectrogram(x)
    np.testing.assert_allclose(out[128 + k - 77], expected, atol=1e-5)
    assert expected.min() > 0.005                     # the ratio is visibly non-zero: the check can fail


# --- invariances -----------------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(magnitude_db=st.floats(-60, 60), phase_rad=st.floats(-np.pi, np.pi), seed=st.integers(0, 2**16))
def test_complex_scale_leaves_channel_independent_spectrogram_unchanged(magnitude_db, phase_rad, seed):
    x = random_packets(np.random.default_rng(seed), 3)
    c = 10 ** (magnitude_db / 20) * np.exp(1j * phase_rad)
    a = channel_independent_spectrogram(x)
    b = channel_independent_spectrogram((x * c).astype(np.complex64))
    assert np.abs(a - b).max() <= TOL
    np.testing.assert_allclose(spectrogram((x * c).astype(np.complex64)), spectrogram(x), atol=TOL)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 9), length=st.integers(384, 3000), n_fft=st.sampled_from([64, 128, 255, 256]),
       hop_frac=st.sampled_from([0.25, 0.5, 1.0]), seed=st.integers(0, 2**16))
def test_batch_equals_row_by_row(n, length, n_fft, hop_frac, seed):
    hop = max(1, int(n_fft * hop_frac))
    x = random_packets(np.random.default_rng(seed), n, length)
    if stft_frame_count(length, n_fft=n_fft, hop=hop) < 2:
        return
    for fn in (channel_independent_spectrogram, spectrogram):
        batch = fn(x, n_fft=n_fft, hop=hop)
        rows = np.stack([fn(row, n_fft=n_fft, hop=hop) for row in x])
        np.testing.assert_allclose(batch, rows, atol=1e-5)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_floor_is_per_packet_whatever_shares_the_block(as_tensor):
    """Packets 300 dB apart, an exact-bin tone (floored rows) and an all-zero packet in one block: each row
    is what the packet gives alone. The floor follows each packet's own peak, not the block's."""
    rng = np.random.default_rng(11)
    n = np.arange(8192)
    tone = np.exp(2j * np.pi * 5 * n / 256)
    rows = [random_packets(rng, 1)[0] * 1e-15, tone * 1e15, np.zeros(8192), random_packets(rng, 1)[0],
            tone * 1e-12 + random_packets(rng, 1)[0] * 1e-20]
    x = np.stack(rows).astype(np.complex64)
    for fn in (channel_independent_spectrogram, spectrogram):
        batch = fn(torch.from_numpy(x)).numpy() if as_tensor else fn(x)
        alone = np.stack([fn(row) for row in x])
        np.testing.assert_allclose(batch, alone, atol=1e-4)
    out = channel_independent_spectrogram(x)
    assert np.count_nonzero(np.delete(out[1], 128 + 5 - 77, axis=0)) == 0   # the tone's floored rows
    assert np.all(out[2] == 0) and np.isfinite(out).all()
    assert np.abs(out[0]).max() > 1.0                                         # the tiny packet is not floored


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_packet_leaves_the_rest_of_its_block_alone(bad, as_tensor):
    """A packet holding a NaN or inf gets a non-finite output; an all-zero packet and a normal one in the same
    block still get exactly what they get alone."""
    x = np.stack([random_packets(np.random.default_rng(12), 1)[0], np.zeros(8192),
                  random_packets(np.random.default_rng(13), 1)[0]]).astype(np.complex64)
    x[0, 4000] = bad
    for fn in (channel_independent_spectrogram, spectrogram):
        out = fn(torch.from_numpy(x)).numpy() if as_tensor else fn(x)
        assert not np.isfinite(out[0]).all()
        np.testing.assert_allclose(out[1:], np.stack([fn(row) for row in x[1:]]), atol=1e-5)
        assert np.isfinite(out[1:]).all()


def test_one_dimensional_input_drops_the_batch_axis():
    x = random_packets(np.random.default_rng(4), 2)
    assert channel_independent_spectrogram(x[0]).shape == (102, 62)
    assert spectrogram(x[0], crop=(0.3, 0.7)).shape == (102, 63)
    one, batch = channel_independent_spectrogram(x[0]), channel_independent_spectrogram(x[:1])
    np.testing.assert_array_equal(one, batch[0])


def test_other_dtypes_are_converted_and_the_input_is_not_written():
    x = random_packets(np.random.default_rng(5), 2)
    keep = x.copy()
    out = channel_independent_spectrogram(x)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_allclose(channel_independent_spectrogram(x.astype(np.complex128)), out, atol=1e-6)
    real = channel_independent_spectrogram(x.real.astype(np.float64))
    assert real.dtype == np.float32 and real.shape == (2, 102, 62)
    # A non-contiguous view gives the same result as its copy.
    wide = np.repeat(x, 2, axis=1)[:, ::2]
    np.testing.assert_array_equal(channel_independent_spectrogram(wide), out)


# --- zero guard ------------------------------------------------------------------------------------------

def test_all_zero_packet_gives_finite_constant_outputs():
    x = np.zeros((2, 8192), np.complex64)
    x[1] = random_packets(np.random.default_rng(6), 1)[0]
    out = channel_independent_spectrogram(x)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_allclose(out[1], authors_channel_ind_spectrogram(x[1].astype(np.complex128)), atol=TOL)
    spec = spectrogram(x)
    np.testing.assert_array_equal(spec[0], -12.0)          # -top_db / 10
    assert np.isfinite(spec).all()
    np.testing.assert_array_equal(spectrogram(x[0], top_db=80.0), -8.0)


def test_packet_with_zero_runs_is_finite_and_matches_the_recipe_where_the_recipe_is_finite():
    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    x = packet_waveform(cfg, cfo_hz=2_000.0, n_samples=8192).copy()
    x[:1500] = 0                                           # leading silence: frames 0..9 (to 1407) all zero
    x[4000:4700] = 0                                       # a gap inside the preamble
    out = channel_independent_spectrogram(x)
    assert np.isfinite(out).all()
    ref = authors_channel_ind_spectrogram(x.astype(np.complex128))
    finite = np.isfinite(ref)
    assert not finite.all()                                # the recipe itself breaks on these zeros
    assert np.abs(out[finite] - ref[finite]).max() <= TOL
    # Frames 0..9 lie wholly in the leading zeros: both columns floored, ratio exactly 0.
    np.testing.assert_array_equal(out[:, :9], 0.0)
    # Out of the silence into frame 10 (36 chirp samples), the ratio jumps by up to the floor's 120 dB.
    assert 6.0 < out[:, 9].max() <= 12.0 + 1e-4
    assert np.isfinite(spectrogram(x)).all()


@pytest.mark.skipif(not (DATA / "grlora_sdr" / "sf8_bw125k_fs1M_sync12_pre8.sigmf-data").exists(),
                    reason="shared recordings absent")
def test_gr_lora_packets_with_exact_zero_idle_time_stay_finite():
    """gr-lora_sdr SF8 packets (ideal, exact zeros between packets): windows straddling packet edges."""
    base = DATA / "grlora_sdr" / "sf8_bw125k_fs1M_sync12_pre8"
    meta = json.loads(base.with_suffix(".sigmf-meta").read_text())
    iq = np.fromfile(base.with_suffix(".sigmf-data"), dtype="<c8")
    starts = [a["core:sample_start"] for a in meta["annotations"]]
    windows = np.stack([iq[s - d: s - d + 8192] for s in starts for d in (0, 3000, 8000)])
    assert np.count_nonzero(windows == 0) > 8000           # the idle zeros are really there
    out = channel_independent_spectrogram(windows)
    assert np.isfinite(out).all()
    ref = per_packet(authors_channel_ind_spectrogram, windows)
    finite = np.isfinite(ref)
    assert np.abs(out[finite] - ref[finite]).max() <= TOL
    np.testing.assert_allclose(out[::3], ref[::3], atol=TOL)   # windows at the preamble start: no zeros


# --- torch -----------------------------------------------------------------------------------------------

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("fn", [channel_independent_spectrogram, spectrogram])
def test_blocks_of_packets_do_not_change_the_result(fn, n_threads, monkeypatch):
    """Packets are processed in cache-sized blocks: tiny blocks (1 packet for numpy, 3 for torch, so the last
    torch block is a partial one) give the same values."""
    x = np.concatenate([random_packets(np.random.default_rng(9), 19), np.zeros((1, 8192), np.complex64)])
    whole = fn(x)
    torch_whole = fn(torch.from_numpy(x)).numpy()
    monkeypatch.setattr(sys.modules["lorarffi.dsp.spectrogram"], "_BLOCK_BINS", 63 * 256)
    monkeypatch.setattr(sys.modules["lorarffi.dsp.spectrogram"], "_TORCH_BLOCK_BINS", 3 * 63 * 256)
    threads = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        np.testing.assert_allclose(fn(torch.from_numpy(x)).numpy(), torch_whole, atol=1e-5)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(fn(x), whole, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn", [channel_independent_spectrogram, spectrogram])
def test_torch_in_torch_out_with_equal_values(fn, device):
    x = np.concatenate([random_packets(np.random.default_rng(7), 3), np.zeros((1, 8192), np.complex64)])
    t = torch.from_numpy(x).to(device)
    out = fn(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == device
    np.testing.assert_allclose(out.cpu().numpy(), fn(x), atol=1e-4)
    one = fn(t[0])
    assert tuple(one.shape) == tuple(out.shape[1:])
    assert torch.isfinite(out).all()
    assert tuple(fn(t[:0]).shape) == (0, *out.shape[1:])


def test_dsp_does_not_import_torch():
    code = ("import sys, numpy as np, lorarffi.dsp as d; d.channel_independent_spectrogram(np.ones(512)); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("transform", [channel_independent_spectrogram, spectrogram])
@pytest.mark.parametrize("workers", [2, 3, -1])
def test_threads_give_bit_identical_output_whatever_lands_in_each_block(transform, workers):
    """Blocks of 16 packets go to the threads in turn: 83 packets is 6 blocks, the last one short. Zero,
    NaN and exact-bin tone packets in some blocks take the per-packet floor path there and not in the rest."""
    x = random_packets(np.random.default_rng(9), 83)
    x[5] = 0
    x[40, 1000] = np.nan
    x[70] = np.exp(2j * np.pi * 8 * np.arange(8192) / 256)
    one = transform(x, workers=1)
    many = transform(x, workers=workers)
    np.testing.assert_array_equal(many, one)
    assert np.isnan(one[40]).any() and np.isfinite(np.delete(one, 40, axis=0)).all()
    np.testing.assert_array_equal(transform(x[:1], workers=workers), one[:1])


# --- errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_fft": 0}, "n_fft=0"),
    ({"hop": 1.5}, "hop=1.5"),
    ({"crop": (0.7, 0.3)}, r"crop=\(0.7, 0.3\)"),
    ({"crop": (0.5, 0.501)}, "keeps no row"),
    ({"crop": "wide"}, "crop='wide'"),
    ({"top_db": -3.0}, "top_db=-3.0"),
    ({"workers": 0}, "workers=0"),
    ({"workers": -10**6}, "negative values go down to"),
])
def test_bad_parameters_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        channel_independent_spectrogram(np.ones((2, 8192), np.complex64), **kwargs)


def test_bad_input_shapes_are_config_errors():
    with pytest.raises(ConfigError, match="need at least 384"):
        channel_independent_spectrogram(np.ones((2, 383), np.complex64))
    with pytest.raises(ConfigError, match="need at least 256"):
        spectrogram(np.ones(255, np.complex64))
    with pytest.raises(ConfigError, match=r"shape \(2, 3, 8192\)"):
        spectrogram(np.ones((2, 3, 8192), np.complex64))
    with pytest.raises(ConfigError, match="dtype"):
        spectrogram(np.array(["a"] * 300))
