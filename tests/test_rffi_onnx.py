"""ONNX export: onnxruntime reproduces torch's logits to float32 rounding for every registered model and any
batch size."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from lorarffi.dsp.config import LoRaConfig
from lorarffi.rffi.checkpoint import ModelDirConfig, load_model, save_model_dir
from lorarffi.rffi.models import build_model
from lorarffi.rffi.onnx_export import export_onnx

ort = pytest.importorskip("onnxruntime")

CASES = {
    "infocom_cnn": ({"input_shape": [102, 62], "in_channels": 1}, (1, 102, 62)),
    "rffi_net": ({"input_shape": [102, 62], "in_channels": 1}, (1, 102, 62)),
    "tifs_resnet": ({"input_shape": [102, 62], "in_channels": 1}, (1, 102, 62)),
    "infocom_iq_cnn": ({"input_shape": [2, 2048]}, (2, 2048)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnxruntime_matches_torch(name: str, tmp_path: pathlib.Path) -> None:
    hp, sample = CASES[name]
    torch.manual_seed(0)
    model = build_model(name, n_classes=6, **hp)
    with torch.no_grad():  # trained-looking BN statistics, so eval-mode BN is not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    rep = {"name": "iq" if name == "infocom_iq_cnn" else "channel_independent_spectrogram", "params": {}}
    save_model_dir(
        tmp_path, model, ModelDirConfig(name, {**hp, "n_classes": 6}, rep, LoRaConfig(), (1, 2, 3, 4, 5, 6))
    )
    path = export_onnx(tmp_path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    loaded, _ = load_model(tmp_path, torch_device="cpu")
    layers = [m for m in loaded.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    n_terms = sum(m.weight[0].numel() for m in layers) + sum(1 for _ in loaded.modules())
    for n in (1, 5):
        x = np.random.default_rng(n).normal(size=(n, *sample)).astype(np.float32)
        got = sess.run(["logits"], {"features": x})[0]
        with torch.no_grad():
            want = loaded(torch.from_numpy(x)).numpy()
        assert got.shape == (n, 6)
        # Two float32 evaluations, each within n_terms u max|logit| of the exact logits (n_terms = the layers'
        # fan-ins plus one rounding per module, u = 2^-24; the exporter folds batch norm into the weights).
        np.testing.assert_allclose(got, want, rtol=0, atol=2 * n_terms * 2.0**-24 * np.abs(want).max())
    meta = {p.key: p.value for p in __import__("onnx").load(str(path)).metadata_props}
    assert json.loads(meta["lora_rffi_config"])["device_ids"] == [1, 2, 3, 4, 5, 6]
