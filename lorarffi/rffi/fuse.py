"""Inference-time graph simplification: fold BatchNorm into the convolution before it.

In eval mode ``BatchNorm2d(Conv2d(x))`` is an affine map of the convolution's output, so it can be folded into
the convolution's weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``), which saves a pass over
every feature map. Outputs equal the unfused model's to float32 rounding.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fuse_conv_bn"]


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded into the convolutions.

    Every ``Conv2d`` directly followed by a ``BatchNorm2d`` inside an ``nn.Sequential`` becomes one ``Conv2d``
    and the BatchNorm ``nn.Identity``. ``model`` itself is unchanged.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names[:-1], names[1:], strict=True):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
    return fused
