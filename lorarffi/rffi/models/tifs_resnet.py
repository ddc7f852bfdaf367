"""The RFF extractor of Shen et al., TIFS 2022 (paper_notes §9.1), with the closed-set classification head.

Stem conv 7x7/2 (32), two residual blocks of 32, a projection block to 64 and one of 64, 2x2 average pooling,
flatten, dense 512, L2 normalisation (the RFF), then a dense layer to the classes. ``batch_norm=True`` is the
authors' ``Closed_set_RFFI`` variant (BN after every convolution); the open-set extractor has none.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lorarffi.errors import ConfigError
from lorarffi.rffi.models import register_model

__all__ = ["TifsResNet", "tifs_resnet"]


def _norm(c: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(c) if batch_norm else nn.Identity()


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, batch_norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)
        self.bn1 = _norm(c_out, batch_norm)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not batch_norm)
        self.bn2 = _norm(c_out, batch_norm)
        self.shortcut = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=not batch_norm), _norm(c_out, batch_norm))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class TifsResNet(nn.Module):
    """TIFS extractor + softmax head: (N, C, F, T) -> logits (N, n_classes); :meth:`embed` gives the RFF.

    Parameters
    ----------
    n_classes : int
        Number of devices.
    input_shape : tuple of int
        ``(F, T)``; ``(102, 62)`` for the channel-independent spectrogram (24,000 features into the dense).
    in_channels : int
        Input channels.
    embedding_dim : int
        Size of the L2-normalised fingerprint (512).
    batch_norm : bool
        BN after each convolution (closed-set variant).
    """

    def __init__(
        self,
        n_classes: int,
        input_shape: tuple[int, int] = (102, 62),
        in_channels: int = 1,
        embedding_dim: int = 512,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ConfigError(f"n_classes={n_classes} is not valid: a classifier needs at least 2 classes")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 32, 7, stride=2, padding=3, bias=not batch_norm),
            _norm(32, batch_norm),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            _ResBlock(32, 32, batch_norm),
            _ResBlock(32, 32, batch_norm),
            _ResBlock(32, 64, batch_norm),
            _ResBlock(64, 64, batch_norm),
        )
        self.pool = nn.AvgPool2d(2)
        f = (input_shape[0] + 1) // 2 // 2
        t = (input_shape[1] + 1) // 2 // 2
        if f < 1 or t < 1:
            raise ConfigError(f"input_shape={tuple(input_shape)} is too small for the TIFS network")
        self.trunk_dim = 64 * f * t
        self.penultimate_dim = embedding_dim
        self.dense = nn.Linear(self.trunk_dim, embedding_dim)
        self.head = nn.Linear(embedding_dim, n_classes)

    head_modules = ("dense", "head")  # what an embedding head replaces (models.embedding)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, F, T) -> the pooled feature map, flattened (N, trunk_dim): the dense layer's input."""
        return torch.flatten(self.pool(self.blocks(self.stem(x))), 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, F, T) -> unit-norm fingerprints (N, embedding_dim)."""
        return F.normalize(self.dense(self.trunk(x)), dim=1)

    penultimate = embed  # the softmax head's input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, F, T) float32 -> logits (N, n_classes)."""
        return self.head(self.embed(x))


@register_model("tifs_resnet")
def tifs_resnet(**hparams) -> TifsResNet:
    """The TIFS ResNet-style extractor (~12.5 M parameters) with a softmax head."""
    return TifsResNet(**hparams)
