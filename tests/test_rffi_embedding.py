"""The embedding API enrollment calls: a softmax model's normalised penultimate features and a metric model's
embedding, through the classifier's preprocessing; dimensions, objective, fingerprint, detected packets."""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.packet import Packet
from lorarffi.errors import ModelError
from lorarffi.rffi.checkpoint import load_model
from lorarffi.rffi.embedding import Embedder, load_embedder
from lorarffi.rffi.inference import load_classifier
from lorarffi.rffi.metric import class_centroids
from lorarffi.rffi.train import TrainConfig, prepare_data, train
from lorarffi.sim import Session, make_fleet, simulate_preamble_set

CFG = LoRaConfig()
U = 2.0**-24  # float32 unit roundoff
TRAINED = {
    objective: TrainConfig(
        model="rffi_net", objective=objective, epochs=4, batch_size=16, seed=2, lr=3e-3, members=1
    )
    for objective in ("softmax", "triplet")
}


@pytest.fixture(scope="module")
def sets():
    fleet = make_fleet(4, seed=11, spread=5.0)
    return tuple(
        simulate_preamble_set(
            fleet,
            CFG,
            n,
            session=Session(day=1, minutes_since_power_on=minutes, place=1),
            rng=np.random.default_rng(seed),
            snr_db=(20, 30),
        )
        for n, minutes, seed in ((30, 20, 1), (15, 40, 2))
    )


@pytest.fixture(scope="module")
def models(sets, tmp_path_factory) -> dict[str, pathlib.Path]:
    tr, _ = sets
    out = {}
    for objective, tc in TRAINED.items():
        d = tmp_path_factory.mktemp(objective)
        train(tr.preambles, tr.device_ids, CFG, d, tc)
        out[objective] = d
    return out


def _rounding_bound(model: torch.nn.Module) -> float:
    """How far two float32 evaluations of a unit embedding may differ (the fused and the plain network): each
    within n u of the exact one (n = the layers' fan-ins plus one rounding per module), normalisation
    keeping that relative size, so twice it."""
    n = sum(m.weight[0].numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    return 2 * (n + sum(1 for _ in model.modules())) * U


def test_a_softmax_model_embeds_with_its_normalised_penultimate_features(models, sets) -> None:
    tr, te = sets
    emb = load_embedder(models["softmax"], torch_device="cpu")
    assert (emb.objective, emb.dim) == ("softmax", 32 * 12)  # rffi_net: 32 channels x 102 // 8 bins
    weights = (models["softmax"] / "weights.safetensors").read_bytes()
    assert emb.fingerprint == "sha256:" + hashlib.sha256(weights).hexdigest()
    pre = emb.preprocess(te.preambles)  # the classifier's path: CFO estimated and removed, unit RMS
    got = emb.embed(pre.iq)
    # against the plain (unfused) network's penultimate layer on the same features
    model, _ = load_model(models["softmax"], torch_device="cpu")
    with torch.no_grad():
        want = F.normalize(model.penultimate(torch.from_numpy(emb.features(pre.iq))), dim=1).numpy()
    assert got.shape == (te.preambles.shape[0], emb.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=_rounding_bound(model))
    np.testing.assert_allclose(
        np.linalg.norm(got.astype(np.float64), axis=1), 1, rtol=0, atol=(emb.dim + 3) * U
    )
    # usable for enrollment: held-out packets nearest their own device's centroid (chance 1/4; 60 packets at
    # chance reach 0.8 with binomial probability below 1e-15)
    ids = np.asarray(emb.device_ids)
    c = class_centroids(
        emb.embed(emb.preprocess(tr.preambles).iq), np.searchsorted(ids, tr.device_ids), ids.size
    )
    assert np.mean(ids[(got @ c.T).argmax(1)] == te.device_ids) >= 0.8


def test_a_metric_model_embeds_and_classifies_by_its_centroids(models, sets) -> None:
    _, te = sets
    emb = load_embedder(models["triplet"], torch_device="cpu")
    assert (emb.objective, emb.dim) == ("triplet", 128)
    pre = emb.preprocess(te.preambles)
    got = emb.embed(pre.iq)
    model, _ = load_model(models["triplet"], torch_device="cpu")
    with torch.no_grad():
        want = model.embed(torch.from_numpy(emb.features(pre.iq))).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=_rounding_bound(model))
    # the classifier of the same directory decides by the nearest training centroid
    clf = load_classifier(models["triplet"], torch_device="cpu")
    dec = clf.classify(pre.iq, pre.cfo_hz, track=False)
    nearest = np.asarray(clf.device_ids)[(got @ model.centroids.numpy().T).argmax(1)]
    assert np.array_equal(dec.cnn_device_id, nearest)
    assert np.mean(dec.device_id == te.device_ids) >= 0.8
    # the head's centroids are the unit means of the training split's packets (not the validation ones)
    tr, _ = sets
    data = prepare_data(tr.preambles, tr.device_ids, CFG, TRAINED["triplet"])
    ids = np.asarray(emb.device_ids)
    real = data.device_train_idx  # the training split without its pseudo-devices
    train_emb = emb.embed(emb.preprocess(tr.preambles[real]).iq)
    want_c = class_centroids(train_emb, np.searchsorted(ids, tr.device_ids[real]), ids.size)
    # each centroid a mean of unit vectors that differ by at most the rounding bound, renormalised
    np.testing.assert_allclose(model.centroids.numpy(), want_c, rtol=0, atol=2 * _rounding_bound(model))


def test_detected_packets_are_embedded_in_the_models_view(models, sets) -> None:
    _, te = sets
    emb = load_embedder(models["triplet"], torch_device="cpu")
    pre = emb.preprocess(te.preambles[:5])
    packets = [
        Packet(
            start=0,
            fingerprint_start=0,
            cfo_hz=float(f),
            snr_db=20.0,
            power_db=0.0,
            preamble=row,
            preamble_fs_hz=CFG.fs_hz,
            sync_word=0x12,
            n_preamble_symbols=8,
            stop=1,
            preamble_with_cfo=np.zeros_like(row),
        )
        for row, f in zip(pre.iq, pre.cfo_hz, strict=True)
    ]
    vectors, cfo_hz = emb.embed_packets(packets)
    assert np.array_equal(vectors, emb.embed(pre.iq)) and np.array_equal(cfo_hz, pre.cfo_hz)


def test_older_configs_and_models_without_penultimate_features(models, tmp_path) -> None:
    d = tmp_path / "old"
    d.mkdir()
    for f in ("weights.safetensors", "config.json"):
        (d / f).write_bytes((models["softmax"] / f).read_bytes())
    doc = json.loads((d / "config.json").read_text())
    doc["training"]["objective"] = "classifier"  # the softmax objective's earlier name
    del doc["weights_sha256"]
    (d / "config.json").write_text(json.dumps(doc))
    old = load_embedder(d, torch_device="cpu")
    assert (old.objective, old.fingerprint) == ("softmax", "")
    _, config = load_model(d, torch_device="cpu")
    with pytest.raises(ModelError, match="no penultimate features"):
        Embedder(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), config)
