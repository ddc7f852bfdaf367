"""Model directories: safetensors + JSON round trip, nothing unpickled, errors a user can act on."""

from __future__ import annotations

import json
import pathlib
import pickle

import numpy as np
import pytest
import torch

from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ModelError
from lorarffi.rffi.checkpoint import (
    CONFIG_FILE,
    HYBRID_STATE_FILE,
    WEIGHTS_FILE,
    ModelDirConfig,
    canonical_safetensors,
    fingerprint_arrays,
    load_model,
    read_config,
    save_hybrid_state,
    save_model_dir,
)
from lorarffi.rffi.hybrid import CfoGate, GateParams
from lorarffi.rffi.models import build_model


def _config(gate: CfoGate) -> ModelDirConfig:
    return ModelDirConfig(
        model_name="infocom_cnn",
        model_hparams={"n_classes": 3, "input_shape": [102, 62], "in_channels": 1},
        representation={"name": "channel_independent_spectrogram", "params": {}},
        lora=LoRaConfig(sf=8, bw_hz=250e3, fs_hz=1e6),
        device_ids=(4, 9, 17),
        hybrid=gate.to_dict(),
        training={"epochs": 3, "augment": ["awgn"]},
        data_fingerprint="sha256:abc",
    )


@pytest.fixture()
def saved(tmp_path: pathlib.Path):
    torch.manual_seed(3)
    model = build_model("infocom_cnn", n_classes=3, input_shape=(102, 62), in_channels=1)
    with torch.no_grad():  # non-default BN statistics must survive too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    model.eval()
    gate = CfoGate.fit(
        [0.0, 5.0, 900.0, 910.0, -700.0, -690.0], [0, 0, 1, 1, 2, 2], [4, 9, 17], GateParams(margin_hz=123.0)
    )
    config = _config(gate)
    save_model_dir(tmp_path / "m", model, config)
    return tmp_path / "m", model, config


def test_round_trip_restores_weights_config_and_outputs(saved, monkeypatch) -> None:
    path, model, config = saved
    assert {p.name for p in path.iterdir()} == {WEIGHTS_FILE, CONFIG_FILE}

    def no_unpickling(*a, **k):
        raise AssertionError("a model directory must never be unpickled")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    loaded, cfg = load_model(path, torch_device="cpu")
    assert not loaded.training
    x = torch.randn(4, 1, 102, 62)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert cfg == config
    assert cfg.lora == LoRaConfig(sf=8, bw_hz=250e3, fs_hz=1e6) and cfg.device_ids == (4, 9, 17)
    gate = CfoGate.from_dict(cfg.hybrid)
    np.testing.assert_allclose(gate.mean_hz, [2.5, 905.0, -695.0])
    doc = json.loads((path / CONFIG_FILE).read_text())
    assert doc["format"] == "lora-rffi-model" and doc["software_version"] and len(doc["weights_sha256"]) == 64
    # Negative control: a different model's weights give different outputs.
    other = build_model("infocom_cnn", n_classes=3, input_shape=(102, 62), in_channels=1).eval()
    with torch.no_grad():
        assert not torch.allclose(other(x), model(x))


def test_equal_weights_save_to_equal_bytes_and_the_file_stays_readable(saved, tmp_path) -> None:
    """The writer orders the metadata map differently from call to call; the saved file (whose hash is the
    model's identity, ``weights_sha256``) must not."""
    from safetensors import safe_open
    from safetensors.torch import save

    path, model, config = saved
    files = []
    for i in range(12):
        save_model_dir(tmp_path / f"again{i}", model, config)
        files.append((tmp_path / f"again{i}" / WEIGHTS_FILE).read_bytes())
    assert all(f == files[0] for f in files)
    assert (path / WEIGHTS_FILE).read_bytes() == files[0]
    assert json.loads((path / CONFIG_FILE).read_text())["weights_sha256"] == json.loads(
        (tmp_path / "again0" / CONFIG_FILE).read_text()
    )["weights_sha256"]
    # the writer's own output really varies (what the canonical form is for), and reordering keeps it valid
    raw = {save({"w": torch.ones(3)}, metadata={"a": "1", "b": "2", "c": "3"}) for _ in range(20)}
    assert len({canonical_safetensors(r) for r in raw}) == 1
    (tmp_path / "w.safetensors").write_bytes(canonical_safetensors(raw.pop()))
    with safe_open(tmp_path / "w.safetensors", "pt") as f:
        assert f.metadata() == {"a": "1", "b": "2", "c": "3"}
        assert torch.equal(f.get_tensor("w"), torch.ones(3))


def test_tracked_hybrid_state_persists_and_a_new_save_clears_it(saved) -> None:
    path, model, config = saved
    gate = CfoGate.from_dict(read_config(path).hybrid)
    gate.set_tracking(False)
    gate.update([50.0], [0], [1.0])  # tracking off: no change
    gate.set_tracking(True)
    gate.update([50.0] * 10, [0] * 10, [1.0] * 10)
    save_hybrid_state(path, gate.to_dict())
    back = CfoGate.from_dict(read_config(path).hybrid)
    assert back.center_hz[0] == pytest.approx(gate.center_hz[0]) and back.center_hz[0] > 2.5
    assert (
        json.loads((path / CONFIG_FILE).read_text())["hybrid"]["center_hz"][0] == 2.5
    )  # training stats kept
    save_model_dir(path, model, config)
    assert not (path / HYBRID_STATE_FILE).exists()


def test_errors_name_the_problem(saved, tmp_path: pathlib.Path) -> None:
    path, _, _ = saved
    with pytest.raises(ModelError, match="not a model directory"):
        load_model(tmp_path / "nowhere")
    doc = json.loads((path / CONFIG_FILE).read_text())
    doc["model"]["hparams"]["widths"] = [4, 8, 16]
    (path / CONFIG_FILE).write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="weights do not fit"):
        load_model(path, torch_device="cpu")
    doc["format_version"] = 99
    (path / CONFIG_FILE).write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="newer than this software"):
        load_model(path, torch_device="cpu")


def test_fingerprint_depends_on_content_and_selection() -> None:
    a = np.arange(10, dtype=np.complex64)
    b = a.copy()
    b[3] += 1e-3
    assert fingerprint_arrays(a) == fingerprint_arrays(a.copy())
    assert fingerprint_arrays(a) != fingerprint_arrays(b)
    assert fingerprint_arrays(a, extra={"packets": [0, 5]}) != fingerprint_arrays(
        a, extra={"packets": [0, 6]}
    )


def test_classifier_gates_rejects_and_is_vectorised(saved) -> None:
    from lorarffi.rffi.inference import load_classifier

    path, _, _ = saved
    clf = load_classifier(path, torch_device="cpu")
    assert clf.device_ids == [4, 9, 17] and clf.lora.sf == 8
    rng = np.random.default_rng(0)
    pre = (rng.standard_normal((5, 8192)) + 1j * rng.standard_normal((5, 8192))).astype(np.complex64)
    cfo = np.array([2.5, 905.0, -695.0, 5000.0, 60.0])  # the 4th is outside every gate interval
    dec = clf.classify(pre, cfo, track=False)
    assert dec.verdict == ["accept", "accept", "accept", "unknown", "accept"]
    assert dec.device_id.tolist() == [4, 9, 17, -1, 4] and dec.confidence[3] == 0
    np.testing.assert_allclose(dec.confidence[[0, 1, 2, 4]], 1.0)  # one device left each time
    assert set(dec.cnn_device_id.tolist()) <= {4, 9, 17}
    rows = [clf.classify(pre[i : i + 1], cfo[i : i + 1], track=False) for i in range(5)]
    assert [r.device_id[0] for r in rows] == dec.device_id.tolist()
    # Row by row the network may take other float32 kernels: the logits then differ by at most
    # dz = 2 n u max|z| (n = the layers' fan-ins plus one rounding per module, u = 2^-24; the features' FFTs
    # add a few ulps), the softmax's top probability by at most 2 dz relative (plus its own rounding), and the
    # CNN's choice not at all while the top two logits are more than 2 dz apart.
    z = clf.logits(pre)
    layers = [m for m in clf.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    n = sum(m.weight[0].numel() for m in layers) + sum(1 for _ in clf.model.modules())
    dz = 2 * n * 2.0**-24 * np.abs(z).max()
    top_two = np.sort(z, axis=1)[:, -2:]
    assert np.all(top_two[:, 1] - top_two[:, 0] > 2 * dz)
    assert [r.cnn_device_id[0] for r in rows] == dec.cnn_device_id.tolist()
    confidence = [r.cnn_confidence[0] for r in rows]
    np.testing.assert_allclose(confidence, dec.cnn_confidence, rtol=2 * dz + 8 * 2.0**-24)
    rec = dec.to_records()[3]
    assert rec["device"] == -1 and rec["verdict"] == "unknown" and rec["cfo_hz"] == 5000.0
    # Drift tracking: confident accepted packets move device 4's centre; the state survives a reload.
    before = clf.gate.center_hz[0]
    clf.classify(pre[[0, 4]], np.array([40.0, 60.0]))
    assert clf.gate.center_hz[0] > before
    clf.save_state()
    assert load_classifier(path, torch_device="cpu").gate.center_hz[0] == pytest.approx(clf.gate.center_hz[0])
    clf.set_tracking(False)
    moved = clf.gate.center_hz[0]
    clf.classify(pre[[0]], np.array([60.0]))
    assert clf.gate.center_hz[0] == moved
