"""Model input representations: the registry, the JSON config, each representation against its definition."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lorarffi.dsp.representation as rep_mod
from lorarffi.dsp import (
    RepresentationConfig,
    available_representations,
    channel_independent_spectrogram,
    output_shape,
    register_representation,
    represent,
    spectrogram,
)
from lorarffi.dsp.normalize import rms_normalize
from lorarffi.errors import ConfigError

NAMES = ["iq", "fft", "spectrogram", "channel_independent_spectrogram"]
U32 = 2.0**-24  # unit roundoff of float32


def fft_rel_bound(n: int) -> float:
    """2-norm relative error of a float32 FFT of length n scaled by one float32 multiply: Higham (Accuracy
    and Stability of Numerical Algorithms, 2nd ed., Thm 24.2), log2(n) eta with eta = mu + gamma_4 (sqrt 2 +
    mu) <= 7 u for twiddles accurate to u, plus u for the scaling."""
    return (7 * np.log2(n) + 1) * U32


def norm_err(a, b) -> float:
    """||a - b||_2 / ||b||_2 over the whole array, in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def packets(seed: int, n: int = 3, length: int = 8192) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, 10.0, (n, 1))
    x = (rng.standard_normal((n, length)) + 1j * rng.standard_normal((n, length))) * scale
    return x.astype(np.complex64)


def normalised(x: np.ndarray) -> np.ndarray:
    """Unit-RMS packets, as the detector and the preprocessing hand them to a representation."""
    return rms_normalize(x)


# --- registry and config ---------------------------------------------------------------------------------

def test_the_four_paper_representations_are_registered():
    assert set(NAMES) <= set(available_representations())


def test_duplicate_registration_is_refused_and_a_new_one_is_a_single_function(monkeypatch):
    monkeypatch.setattr(rep_mod, "_REGISTRY", dict(rep_mod._REGISTRY))
    with pytest.raises(ConfigError, match="'iq' is already registered"):
        @register_representation("iq", shape=lambda n_samples: (2, n_samples))
        def _again(iq):
            return iq

    @register_representation("power_envelope", shape=lambda n, *, decimation: (1, n // decimation))
    def _power_envelope(iq, *, decimation=4):
        p = (iq.real**2 + iq.imag**2).astype(np.float32)
        return p.reshape(p.shape[0], 1, -1, decimation).mean(axis=-1)

    cfg = RepresentationConfig("power_envelope", {"decimation": 8})
    x = packets(0, 2, 64)
    out = represent(x, cfg)
    assert out.shape == (2, *output_shape(cfg, 64)) == (2, 1, 8)
    # float32: each |x|^2 off by at most 2 u, the sum of 8 positive terms by 7 u more (the division by 8 is
    # exact); the reference is float64
    ref = np.mean(np.abs(x[1, :8].astype(np.complex128)) ** 2)
    np.testing.assert_allclose(out[1, 0, 0], ref, rtol=10 * U32)
    assert output_shape(RepresentationConfig("power_envelope"), 64) == (1, 16)   # the function's default
    with pytest.raises(ConfigError, match="keyword-only"):
        @register_representation("positional", shape=lambda n_samples, k: (1, k))
        def _positional(iq, k):
            return iq


def test_config_is_frozen_hashable_and_round_trips_through_json():
    cfg = RepresentationConfig("channel_independent_spectrogram", {"n_fft": 128, "crop": [0.25, 0.75]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "iq"
    with pytest.raises(TypeError):
        cfg.params["n_fft"] = 64
    back = RepresentationConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and hash(back) == hash(cfg)
    assert back.params["crop"] == (0.25, 0.75)
    assert cfg != RepresentationConfig("channel_independent_spectrogram", {"n_fft": 64})
    assert len({cfg, back, RepresentationConfig("iq")}) == 2


def test_config_does_not_alias_the_callers_dict():
    params = {"n_fft": 128}
    cfg = RepresentationConfig("spectrogram", params)
    params["n_fft"] = 64
    assert cfg.params["n_fft"] == 128


@pytest.mark.parametrize(("args", "match"), [
    (("cqt",), "name='cqt' is not valid"),
    (("spectrogram", {"nfft": 128}), r"\['nfft'\] are not parameters of representation 'spectrogram'"),
    (("iq", {"n_fft": 128}), "valid are none"),
    (("spectrogram", {"n_fft": float("nan")}), "finite"),
    (("spectrogram", {"crop": {"lo": 0.3}}), "not valid"),
])
def test_bad_configs_are_config_errors(args, match):
    with pytest.raises(ConfigError, match=match):
        RepresentationConfig(*args)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ConfigError, match="keys"):
        RepresentationConfig.from_dict({"name": "iq", "parms": {}})
    with pytest.raises(ConfigError, match="keys"):
        RepresentationConfig.from_dict({"params": {}})


# --- each representation against its definition ----------------------------------------------------------

def test_iq_is_real_and_imaginary_rows_of_the_packet():
    z = normalised(packets(1))
    out = represent(z, RepresentationConfig("iq"))
    assert out.shape == (3, 2, 8192) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], z.real)  # copied, not normalised again
    np.testing.assert_array_equal(out[:, 1], z.imag)


def test_fft_is_the_shifted_spectrum_of_the_packet_at_its_mean_power():
    z = normalised(packets(2))
    out = represent(z, RepresentationConfig("fft"))
    assert out.shape == (3, 2, 8192) and out.dtype == np.float32
    ref = np.fft.fftshift(np.fft.fft(z.astype(np.complex128), axis=1), axes=1) / np.sqrt(8192)
    assert norm_err(out, np.stack((ref.real, ref.imag), axis=1)) <= fft_rel_bound(8192)
    # Parseval: unit power in, unit power out (the power is off by at most twice the norm bound, and z's own
    # power by 4 u from its normalisation)
    power = np.mean(out.astype(np.float64) ** 2, axis=2).sum(axis=1)
    np.testing.assert_allclose(power, 1.0, rtol=2 * fft_rel_bound(8192) + 4 * U32)
    # A tone k bins above DC lands at index L/2 + k, negative frequencies first.
    n = np.arange(1024)
    tone = represent(np.exp(-2j * np.pi * 10 * n / 1024).astype(np.complex64), RepresentationConfig("fft"))
    assert np.argmax(tone[0] ** 2 + tone[1] ** 2) == 512 - 10


@pytest.mark.parametrize("params", [{}, {"n_fft": 128, "hop": 64}, {"crop": [0.3, 0.7], "top_db": 80.0}])
def test_spectrogram_representations_are_the_dsp_functions_with_a_channel_axis(params):
    x = packets(3)
    kw = {**params, **({"crop": tuple(params["crop"])} if "crop" in params else {})}
    np.testing.assert_array_equal(represent(x, RepresentationConfig("spectrogram", params)),
                                  spectrogram(x, **kw)[:, None])
    cis = RepresentationConfig("channel_independent_spectrogram", params)
    np.testing.assert_array_equal(represent(x, cis), channel_independent_spectrogram(x, **kw)[:, None])


def test_default_channel_independent_spectrogram_is_the_tifs_shape():
    out = represent(packets(4), RepresentationConfig("channel_independent_spectrogram"))
    assert out.shape == (3, 1, 102, 62) and out.dtype == np.float32


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(NAMES), length=st.integers(384, 5000), n_fft=st.sampled_from([64, 128, 256]),
       crop=st.sampled_from([None, (0.3, 0.7), (0.1, 0.5)]))
def test_output_shape_predicts_represent(name, length, n_fft, crop):
    params = {"n_fft": n_fft, "hop": n_fft // 2, "crop": crop} if "spectrogram" in name else {}
    cfg = RepresentationConfig(name, params)
    assert represent(packets(5, 2, length), cfg).shape == (2, *output_shape(cfg, length))


def test_output_shape_errors_name_the_problem():
    with pytest.raises(ConfigError, match="n_samples=300 is shorter than two frames"):
        output_shape(RepresentationConfig("channel_independent_spectrogram"), 300)
    with pytest.raises(ConfigError, match="n_samples=0"):
        output_shape(RepresentationConfig("iq"), 0)
    with pytest.raises(ConfigError, match="rep_cfg"):
        represent(packets(0), {"name": "iq"})


@pytest.mark.parametrize("name", NAMES)
def test_one_dimensional_input_drops_the_batch_axis(name):
    x = normalised(packets(6, 2))
    cfg = RepresentationConfig(name)
    one = represent(x[0], cfg)
    assert one.shape == output_shape(cfg, 8192)
    np.testing.assert_array_equal(one, represent(x[:1], cfg)[0])  # the same kernel on the same data


@pytest.mark.parametrize("name", NAMES)
def test_zero_packet_gives_finite_output(name):
    x = normalised(packets(7, 2))
    x[0] = 0
    out = represent(x, RepresentationConfig(name))
    assert np.isfinite(out).all() and not np.all(out[1] == out[0])


@pytest.mark.parametrize("name", ["iq", "fft"])
def test_iq_and_fft_are_linear_in_the_packet(name):
    """A power-of-two scale commutes with every float32 rounding (no overflow here): exactly linear. (The
    spectrograms do not depend on the scale at all: tests/test_dsp_spectrogram.py.)"""
    x = normalised(packets(9, 2))
    cfg = RepresentationConfig(name)
    np.testing.assert_array_equal(represent(x * np.float32(32.0), cfg), 32 * represent(x, cfg))
    assert not np.array_equal(represent(x * np.float32(32.0), cfg), represent(x, cfg))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_torch_in_torch_out_with_equal_values(name, device):
    """IQ rows are copies (equal); the FFT comes from torch's library, within twice the FFT bound of numpy's
    path; the spectrograms are their dsp functions on the tensor (whose own tests compare backends)."""
    x = normalised(packets(8))
    cfg = RepresentationConfig(name)
    t = torch.from_numpy(x).to(device)
    out = represent(t, cfg)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == device
    got, ref = out.cpu().numpy(), represent(x, cfg)
    if name == "iq":
        np.testing.assert_array_equal(got, ref)
    elif name == "fft":
        assert norm_err(got, ref) <= 2 * fft_rel_bound(8192)
    else:
        fn = spectrogram if name == "spectrogram" else channel_independent_spectrogram
        np.testing.assert_array_equal(got, fn(t).cpu().numpy()[:, None])


# --- the folded channel-independent spectrogram ------------------------------------------------------------

FOLDED = RepresentationConfig("folded_channel_independent_spectrogram", {})


def test_folding_averages_the_powers_of_whole_periods_then_takes_cyclic_ratios():
    x = normalised(packets(7))
    log_power = spectrogram(x, crop=(0.3, 0.7)).astype(np.float64)  # (N, 102, 63): 7 periods of 8, 7 left
    folded = represent(x, FOLDED)
    assert folded.shape == (3, 1, 102, 8) == (3, *output_shape(FOLDED, 8192))
    power = (10.0**log_power[..., :56]).reshape(3, 102, 7, 8).mean(axis=2)
    expected = np.log10(np.roll(power, -1, axis=-1) / power)
    # float32 10**x (relative error ~ |x| ln10 u <= 30 u for |x| <= 12), a mean of 7 and a ratio: relative
    # power error below 40 u, i.e. below 40 u / ln 10 in log10 units, twice (numerator and denominator).
    np.testing.assert_allclose(folded[:, 0], expected, rtol=0, atol=2 * 40 * U32 / np.log(10))


def test_folding_a_preamble_keeps_what_every_chirp_repeats_and_averages_noise_down():
    from lorarffi.dsp import LoRaConfig, packet_waveform

    cfg = LoRaConfig()
    clean = packet_waveform(cfg)[: cfg.preamble_samples][None]  # 8 identical up-chirps
    ci = channel_independent_spectrogram(clean)
    folded = represent(clean, FOLDED)[:, 0]
    # Every period of a periodic signal has the same powers: the folded ratios are the unfolded ones of one
    # period (up to the FFT's rounding carried through log10, far below 1e-3 where the power is not floored).
    np.testing.assert_allclose(folded[..., :7], ci[..., :7], rtol=0, atol=1e-3)
    # Over noise realisations, each folded ratio varies much less than one period's does: the log of a mean
    # of 7 powers instead of one (for noise alone, var log of a Gamma(7) mean over var log Exp is
    # psi'(1) / psi'(7) = 10.7); checked as a ratio of mean variances above 4 (102 x 7 bins, 20 realisations
    # each).
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal((20, clean.shape[1])) + 1j * rng.standard_normal((20, clean.shape[1]))) * 0.3
    noisy = (clean + noise).astype(np.complex64)
    one = channel_independent_spectrogram(noisy)[..., :7] - ci[..., :7]
    many = represent(noisy, FOLDED)[:, 0, :, :7] - folded[..., :7]
    assert np.mean(np.var(one, axis=0)) / np.mean(np.var(many, axis=0)) > 4.0


def test_a_period_longer_than_the_packet_is_refused():
    with pytest.raises(ConfigError, match="period_frames=100"):
        cfg = RepresentationConfig("folded_channel_independent_spectrogram", {"period_frames": 100})
        output_shape(cfg, 8192)
