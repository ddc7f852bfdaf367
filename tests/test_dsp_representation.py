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
from lorarffi.errors import ConfigError

NAMES = ["iq", "fft", "spectrogram", "channel_independent_spectrogram"]


def packets(seed: int, n: int = 3, length: int = 8192) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.1, 10.0, (n, 1))
    x = (rng.standard_normal((n, length)) + 1j * rng.standard_normal((n, length))) * scale
    return x.astype(np.complex64)


def normalised(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.complex128)
    return z / np.sqrt(np.mean(np.abs(z) ** 2, axis=1, keepdims=True))


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
    np.testing.assert_allclose(out[1, 0, 0], np.mean(np.abs(x[1, :8]) ** 2), rtol=1e-5)
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

def test_iq_is_real_and_imaginary_rows_of_the_rms_normalised_packet():
    x = packets(1)
    out = represent(x, RepresentationConfig("iq"))
    assert out.shape == (3, 2, 8192) and out.dtype == np.float32
    z = normalised(x)
    np.testing.assert_allclose(out[:, 0], z.real, atol=1e-5)
    np.testing.assert_allclose(out[:, 1], z.imag, atol=1e-5)
    np.testing.assert_allclose(np.mean(out[:, 0] ** 2 + out[:, 1] ** 2, axis=1), 1.0, rtol=1e-5)


def test_fft_is_the_shifted_unit_power_spectrum_of_the_normalised_packet():
    x = packets(2)
    out = represent(x, RepresentationConfig("fft"))
    assert out.shape == (3, 2, 8192) and out.dtype == np.float32
    z = normalised(x)
    ref = np.fft.fftshift(np.fft.fft(z, axis=1), axes=1) / np.sqrt(8192)
    np.testing.assert_allclose(out[:, 0], ref.real, atol=1e-4)
    np.testing.assert_allclose(out[:, 1], ref.imag, atol=1e-4)
    np.testing.assert_allclose(np.mean(out[:, 0] ** 2 + out[:, 1] ** 2, axis=1), 1.0, rtol=1e-4)   # Parseval
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
    x = packets(6, 2)
    cfg = RepresentationConfig(name)
    one = represent(x[0], cfg)
    assert one.shape == output_shape(cfg, 8192)
    np.testing.assert_allclose(one, represent(x, cfg)[0], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_zero_packet_gives_finite_output_and_positive_scale_changes_nothing(name):
    x = packets(7, 2)
    x[0] = 0
    cfg = RepresentationConfig(name)
    out = represent(x, cfg)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(represent(x * np.float32(37.5), cfg), out, atol=1e-4)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_torch_in_torch_out_with_equal_values(name, device):
    x = packets(8)
    cfg = RepresentationConfig(name)
    out = represent(torch.from_numpy(x).to(device), cfg)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == device
    np.testing.assert_allclose(out.cpu().numpy(), represent(x, cfg), atol=1e-4)
