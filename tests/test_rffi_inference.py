"""Classifier: the model's config decides which view of a packet it classifies (CFO compensated or as
received), and the network's input is computed from that view as it is (no second normalisation, no CFO put
back). Untrained networks suffice: the inputs are compared, not the accuracy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lorarffi.dsp import LoRaConfig, detect, estimate_cfo, packet_waveform
from lorarffi.dsp.cfo import compensate_cfo
from lorarffi.dsp.normalize import rms_normalize
from lorarffi.errors import ConfigError
from lorarffi.rffi.checkpoint import ModelDirConfig
from lorarffi.rffi.inference import Classifier
from lorarffi.rffi.models import build_model
from lorarffi.rffi.preprocess import preprocess_preambles

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
L = CFG.preamble_samples
STARTS = (3000, 20_000)  # whole samples: the detector's window is then the stream's own samples
CFO_HZ = (7_000.0, -12_000.0)


def classifier(compensation: bool) -> Classifier:
    torch.manual_seed(0)
    model = build_model("infocom_iq_cnn", n_classes=2, input_shape=[2, L]).eval()
    config = ModelDirConfig(model_name="infocom_iq_cnn",
                            model_hparams={"n_classes": 2, "input_shape": [2, L]},
                            representation={"name": "iq", "params": {}}, lora=CFG, device_ids=(3, 5),
                            cfo_compensation=compensation)
    return Classifier(model, config)


@pytest.fixture(scope="module")
def stream():
    rng = np.random.default_rng(12)
    iq = np.zeros(40_000, np.complex64)
    for start, cfo in zip(STARTS, CFO_HZ, strict=True):
        pk = 0.7 * packet_waveform(CFG, [1, 2, 3], cfo_hz=cfo, phase_rad=rng.uniform(0, 6.28))
        iq[start : start + pk.size] += pk
    iq += (0.02 * (rng.standard_normal(iq.size) + 1j * rng.standard_normal(iq.size))).astype(np.complex64)
    packets = detect(iq, CFG)
    assert [p.start for p in packets] == list(STARTS)
    assert [p.fingerprint_start for p in packets] == list(STARTS)
    return iq, packets


@pytest.mark.parametrize("compensation", [True, False])
def test_the_model_config_picks_the_packet_view(stream, compensation):
    _, packets = stream
    clf = classifier(compensation)
    got = clf.packet_preambles(packets)
    view = [p.preamble if compensation else p.preamble_with_cfo for p in packets]
    np.testing.assert_array_equal(got, np.stack(view))
    cfo_left = np.asarray(estimate_cfo(got, CFG))
    if compensation:
        assert np.all(np.abs(cfo_left) < 20.0)
    else:
        np.testing.assert_allclose(cfo_left, CFO_HZ, atol=20.0)
    dec = clf.classify_packets(packets, track=False)
    ref = clf.classify(got, np.array([p.cfo_hz for p in packets]), track=False)
    assert dec.device_id.tolist() == ref.device_id.tolist()
    np.testing.assert_array_equal(dec.cnn_confidence, ref.cnn_confidence)
    assert clf.classify_packets([], track=False).device_id.size == 0


def test_live_and_offline_give_a_model_without_compensation_the_same_input(stream):
    """Same samples, same normalisation function: the detector's as-received window and the preprocessing
    of the stored window are bit-identical, and so are the network's inputs."""
    iq, packets = stream
    clf = classifier(False)
    stored = np.stack([iq[s : s + L] for s in STARTS])
    pre = clf.preprocess(stored)
    np.testing.assert_array_equal(pre.iq, clf.packet_preambles(packets))
    np.testing.assert_array_equal(clf.features(pre.iq), clf.features(clf.packet_preambles(packets)))
    np.testing.assert_allclose(pre.cfo_hz, CFO_HZ, atol=20.0)


def test_preprocess_follows_the_model_config(stream):
    iq, _ = stream
    stored = np.stack([iq[s : s + L + 100] for s in STARTS])  # longer rows are cut
    for compensation in (True, False):
        pre = classifier(compensation).preprocess(stored)
        ref = preprocess_preambles(stored, CFG, compensate=compensation)
        np.testing.assert_array_equal(pre.iq, ref.iq)
        np.testing.assert_array_equal(pre.cfo_hz, ref.cfo_hz)
    x = stored[:, :L]
    cfo = np.asarray(estimate_cfo(x, CFG))
    np.testing.assert_array_equal(classifier(True).preprocess(stored).iq,
                                  rms_normalize(compensate_cfo(x, cfo, CFG.fs_hz)))
    np.testing.assert_array_equal(classifier(False).preprocess(stored).iq, rms_normalize(x))


@pytest.mark.parametrize("compensation", [True, False])
def test_features_are_the_view_as_given(stream, compensation):
    """The IQ representation of a unit-RMS view is its real and imaginary rows, exactly: nothing normalised
    or rotated on the way; a scaled input comes out scaled (negative control for a hidden normalisation)."""
    _, packets = stream
    clf = classifier(compensation)
    x = clf.packet_preambles(packets)
    feats = clf.features(x)
    np.testing.assert_array_equal(feats[:, 0], x.real)
    np.testing.assert_array_equal(feats[:, 1], x.imag)
    np.testing.assert_array_equal(clf.features(x * np.float32(4.0)), feats * np.float32(4.0))


def test_packets_that_do_not_fit_the_model_are_refused(stream):
    _, packets = stream
    other_rate = [dataclasses.replace(p, preamble_fs_hz=2e6) for p in packets]
    with pytest.raises(ConfigError, match="2e\\+06 Hz but the model was trained at 1e\\+06 Hz"):
        classifier(True).packet_preambles(other_rate)
    no_view = [dataclasses.replace(p, preamble_with_cfo=None) for p in packets]
    with pytest.raises(ConfigError, match="without CFO compensation"):
        classifier(False).packet_preambles(no_view)
    compensated = np.stack([p.preamble for p in packets])
    np.testing.assert_array_equal(classifier(True).packet_preambles(no_view), compensated)
    with pytest.raises(ConfigError, match="expected \\(N, L\\) with L >= 8192"):
        classifier(True).features(np.zeros((2, 100), np.complex64))
