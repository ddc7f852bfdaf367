"""A light spectrogram CNN of ours: the INFOCOM topology with pooling after every block, global statistics
over time and dropout, so the dense layer stays small and the network generalises across days.

Three blocks (``convs_per_block`` x [conv 3x3, BN, ReLU], 2x2 max pooling) of ``widths`` filters; then the
feature map is averaged over time (the preamble is periodic, the frequency axis carries the fingerprint),
flattened over frequency and channels, and classified by one dense layer.
"""

from __future__ import annotations

import torch
from torch import nn

from lorarffi.errors import ConfigError
from lorarffi.rffi.models import register_model

__all__ = ["RffiNet", "rffi_net"]


def _block(c_in: int, c_out: int, n_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [
            nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class RffiNet(nn.Module):
    """(N, C, F, T) float32 -> logits (N, n_classes).

    Parameters
    ----------
    n_classes : int
        Number of devices.
    input_shape : tuple of int
        ``(F, T)`` of the input spectrogram.
    in_channels : int
        Input channels.
    widths : tuple of int
        Filters of the three blocks.
    dropout : float
        Dropout before the dense layer.
    convs_per_block : int
        Convolutions (3x3, BN, ReLU) per block before its pooling.
    """

    def __init__(
        self,
        n_classes: int,
        input_shape: tuple[int, int] = (102, 62),
        in_channels: int = 1,
        widths: tuple[int, int, int] = (8, 16, 32),
        dropout: float = 0.3,
        convs_per_block: int = 1,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ConfigError(f"n_classes={n_classes} is not valid: a classifier needs at least 2 classes")
        f = input_shape[0] // 8
        if f < 1 or input_shape[1] < 8:
            raise ConfigError(
                f"input_shape={tuple(input_shape)} is too small for rffi_net (need at least 8 x 8)"
            )
        w1, w2, w3 = widths
        n = convs_per_block
        self.features = nn.Sequential(_block(in_channels, w1, n), _block(w1, w2, n), _block(w2, w3, n))
        self.trunk_dim = self.penultimate_dim = w3 * f
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.trunk_dim, n_classes)

    head_modules = ("dropout", "classifier")  # what an embedding head replaces (models.embedding)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, F, T) -> the time-averaged feature map, flattened (N, trunk_dim): the dense layer's
        input."""
        z = self.features(x).mean(dim=3)  # (N, w3, F/8): average over time
        return torch.flatten(z, 1)

    penultimate = trunk  # the classifier's input (dropout acts in training only)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, F, T) -> logits (N, n_classes)."""
        return self.classifier(self.dropout(self.trunk(x)))


@register_model("rffi_net")
def rffi_net(**hparams) -> RffiNet:
    """Our light spectrogram CNN (about 4 MMAC per packet at (102, 62))."""
    return RffiNet(**hparams)
