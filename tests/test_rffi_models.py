"""The model registry and every registered network: shapes, sizes, batch independence, devices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lorarffi.errors import ConfigError
from lorarffi.rffi.models import build_model, list_models, register_model

SHAPES = {  # model -> (hparams, one sample's input shape)
    "infocom_cnn": ({"input_shape": (102, 62), "in_channels": 1}, (1, 102, 62)),
    "rffi_net": ({"input_shape": (102, 62), "in_channels": 1}, (1, 102, 62)),
    "tifs_resnet": ({"input_shape": (102, 62), "in_channels": 1}, (1, 102, 62)),
    "infocom_iq_cnn": ({"input_shape": (2, 1024)}, (2, 1024)),
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_registry_lists_every_family_and_refuses_duplicates() -> None:
    assert set(SHAPES) <= set(list_models())
    with pytest.raises(ConfigError, match="already registered"):
        register_model("infocom_cnn")(lambda **hp: None)
    with pytest.raises(ConfigError, match="model='nope' is not registered"):
        build_model("nope", n_classes=3)
    with pytest.raises(ConfigError, match="bad hyper-parameters"):
        build_model("infocom_cnn", n_classes=3, no_such_width=4)
    with pytest.raises(ConfigError, match="n_classes=1"):
        build_model("infocom_cnn", n_classes=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_model_maps_a_batch_to_logits_row_by_row(name: str, device: str) -> None:
    hp, sample = SHAPES[name]
    torch.manual_seed(0)
    model = build_model(name, n_classes=7, **hp).to(device).eval()
    x = torch.randn(5, *sample, device=device)
    with torch.no_grad():
        z = model(x)
        rows = torch.cat([model(x[i : i + 1]) for i in range(5)])
    assert z.shape == (5, 7) and z.dtype == torch.float32 and z.device.type == device
    # Batch and single rows may take other kernels: each float32 evaluation is within n u max|z| of the exact
    # logits (n = the terms accumulated along the network: the layers' fan-ins, plus one rounding per module;
    # u = 2^-24), so the two differ by at most twice that.
    n = sum(m.weight[0].numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    n += sum(1 for _ in model.modules())
    torch.testing.assert_close(z, rows, rtol=0, atol=2 * n * 2.0**-24 * float(z.abs().max()))
    # Negative control: different inputs give different logits.
    assert not torch.allclose(z[0], z[1])


def test_tifs_extractor_has_the_papers_parameter_count_and_unit_norm_fingerprint() -> None:
    # paper_notes §15: 12,458,496 parameters without BN, the dense layer 12,288,512 (24,000 -> 512).
    model = build_model("tifs_resnet", n_classes=10, batch_norm=False)
    n_head = 512 * 10 + 10
    assert sum(p.numel() for p in model.parameters()) - n_head == 12_458_496
    assert model.dense.weight.shape == (512, 24_000)
    z = model.embed(torch.randn(3, 1, 102, 62))
    # The normalisation and this norm each sum 512 squares in float32: within 2 x 512 u of 1 (u = 2^-24).
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3), rtol=0, atol=2 * 512 * 2.0**-24)


def test_infocom_cnn_is_a_few_mmac() -> None:
    model = build_model("infocom_cnn", n_classes=20, input_shape=(102, 62))
    macs = 0
    f, t = 102, 62
    for m in model.features:
        if isinstance(m, torch.nn.Conv2d):
            macs += m.out_channels * m.in_channels * 9 * f * t
        if isinstance(m, torch.nn.MaxPool2d):
            f, t = f // 2, t // 2
    macs += model.classifier.in_features * 20
    assert 2e6 < macs < 6e6
