"""Folding BatchNorm into convolutions for inference changes no output."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lorarffi.rffi.fuse import fuse_conv_bn
from lorarffi.rffi.models import build_model, list_models


def _with_running_stats(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


def _rounding_bound(model: nn.Module, ref: torch.Tensor) -> float:
    """How far two float32 evaluations of ``model``'s logits ``ref`` may differ: each is within n u max|ref|
    of the exact value (n = the layers' fan-ins plus one rounding per module, the fold's rounded weights
    included; u = 2^-24), so twice that."""
    n = sum(m.weight[0].numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    n += sum(1 for _ in model.modules())
    return 2 * n * 2.0**-24 * float(ref.abs().max())


@pytest.mark.parametrize("name", ["infocom_cnn", "rffi_net"])
def test_fused_model_gives_the_same_logits(name):
    assert name in list_models()
    model = _with_running_stats(build_model(name, n_classes=5, input_shape=(102, 62)))
    fused = fuse_conv_bn(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn > 0 and not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(7, 1, 102, 62)
    with torch.inference_mode():
        ref = model(x)
        out = fused(x)
        out_cl = fused.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    tol = _rounding_bound(model, ref)
    torch.testing.assert_close(out, ref, rtol=0, atol=tol)
    torch.testing.assert_close(out_cl, ref, rtol=0, atol=tol)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "the original must stay unfused"


def test_a_wrong_fold_would_be_caught():
    model = _with_running_stats(build_model("infocom_cnn", n_classes=5, input_shape=(102, 62)))
    fused = fuse_conv_bn(model)
    for m in fused.modules():  # corrupt the fold: drop one fused bias
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            m.bias.data.zero_()
            break
    x = torch.randn(3, 1, 102, 62)
    with torch.inference_mode():
        ref = model(x)
        assert float((fused(x) - ref).abs().max()) > _rounding_bound(model, ref)
