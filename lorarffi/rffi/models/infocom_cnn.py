"""The CNNs of Shen et al., INFOCOM 2021 (paper_notes §6): the spectrogram CNN (Fig. 3a) and the IQ/FFT CNN
(Fig. 3b).

Unstated details, chosen here: 'same' padding; pooling after the first two convolutions only, as Fig. 3a
draws it (the text says after each); no dropout. The classifier is a single dense layer on the flattened
feature map, so ``input_shape`` is an architecture hyper-parameter.
"""

from __future__ import annotations

import torch
from torch import nn

from lorarffi.errors import ConfigError
from lorarffi.rffi.models import register_model

__all__ = ["InfocomCNN", "InfocomIQCNN", "infocom_cnn", "infocom_cnn_wide", "infocom_iq_cnn"]

#: Filters and dropout of ``infocom_cnn_wide`` (docs/models.md, "Default model": at 0-10 dB in-band SNR the
#: paper's 8/16/32 filters leave about 8 points of single-packet accuracy that four times as many recover).
WIDE_WIDTHS = (32, 64, 128)
WIDE_DROPOUT = 0.3


def _conv_bn_relu(c_in: int, c_out: int, kernel: tuple[int, int]) -> list[nn.Module]:
    """'same'-padded conv (extra row/column of padding at the bottom/right for even kernels), BN, ReLU."""
    kh, kw = kernel
    if kh % 2 and kw % 2:  # symmetric padding: let the convolution pad (no padded copy of the input)
        conv = nn.Conv2d(c_in, c_out, kernel, padding=(kh // 2, kw // 2), bias=False)
        return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    pad = nn.ZeroPad2d(((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2))
    return [pad, nn.Conv2d(c_in, c_out, kernel, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class InfocomCNN(nn.Module):
    """Spectrogram CNN: 3 x (conv 3x3, BN, ReLU), 2x2 max pooling after the first two, dense to the classes.

    Parameters
    ----------
    n_classes : int
        Number of devices.
    input_shape : tuple of int
        ``(F, T)`` of the spectrogram, e.g. ``(102, 62)`` for the channel-independent spectrogram.
    in_channels : int
        Input channels (1 for a spectrogram).
    widths : tuple of int
        Filters of the three convolutions (8, 16, 32 in the paper).
    pool_last : bool
        Also pool after the third convolution (the paper's text; its figure does not).
    """

    def __init__(
        self,
        n_classes: int,
        input_shape: tuple[int, int] = (102, 62),
        in_channels: int = 1,
        widths: tuple[int, int, int] = (8, 16, 32),
        pool_last: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ConfigError(f"n_classes={n_classes} is not valid: a classifier needs at least 2 classes")
        w1, w2, w3 = widths
        layers = [
            *_conv_bn_relu(in_channels, w1, (3, 3)),
            nn.MaxPool2d(2),
            *_conv_bn_relu(w1, w2, (3, 3)),
            nn.MaxPool2d(2),
            *_conv_bn_relu(w2, w3, (3, 3)),
        ]
        f, t = input_shape[0] // 4, input_shape[1] // 4
        if pool_last:
            layers.append(nn.MaxPool2d(2))
            f, t = f // 2, t // 2
        if f < 1 or t < 1:
            raise ConfigError(
                f"input_shape={tuple(input_shape)} is too small for this CNN (need at least 4 x 4)"
            )
        self.features = nn.Sequential(*layers)
        self.trunk_dim = self.penultimate_dim = w3 * f * t
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.trunk_dim, n_classes)

    head_modules = ("dropout", "classifier")  # what an embedding head replaces (models.embedding)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, F, T) -> the flattened feature map (N, trunk_dim), the dense layer's input."""
        return torch.flatten(self.features(x), 1)

    penultimate = trunk  # the classifier's input (dropout acts in training only)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, F, T) float32 -> logits (N, n_classes)."""
        return self.classifier(self.dropout(self.trunk(x)))


class InfocomIQCNN(nn.Module):
    """IQ / FFT CNN (Fig. 3b): conv 8 x (1x128), 16 x (2x128), 32 x (2x128), BN, ReLU, 1x4 pooling, dense.

    Input ``(N, 2, L)`` (real and imaginary rows), seen as a one-channel ``2 x L`` image.
    """

    def __init__(
        self,
        n_classes: int,
        input_shape: tuple[int, int] = (2, 8192),
        in_channels: int = 1,
        widths: tuple[int, int, int] = (8, 16, 32),
        kernel_len: int = 128,
    ) -> None:
        super().__init__()
        if n_classes < 2:
            raise ConfigError(f"n_classes={n_classes} is not valid: a classifier needs at least 2 classes")
        rows, length = input_shape
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, w1, (1, kernel_len)),
            nn.MaxPool2d((1, 4)),
            *_conv_bn_relu(w1, w2, (2, kernel_len)),
            nn.MaxPool2d((1, 4)),
            *_conv_bn_relu(w2, w3, (2, kernel_len)),
        )
        self.trunk_dim = self.penultimate_dim = w3 * rows * (length // 16)
        self.classifier = nn.Linear(self.trunk_dim, n_classes)

    head_modules = ("classifier",)  # what an embedding head replaces (models.embedding)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2, L) -> the flattened feature map (N, trunk_dim), the dense layer's input."""
        return torch.flatten(self.features(x.unsqueeze(1)), 1)

    penultimate = trunk  # the classifier's input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2, L) float32 -> logits (N, n_classes)."""
        return self.classifier(self.trunk(x))


@register_model("infocom_cnn")
def infocom_cnn(**hparams) -> InfocomCNN:
    """The INFOCOM spectrogram CNN (a few MMAC per packet)."""
    return InfocomCNN(**hparams)


@register_model("infocom_cnn_wide", defaults={"widths": list(WIDE_WIDTHS), "dropout": WIDE_DROPOUT})
def infocom_cnn_wide(**hparams) -> InfocomCNN:
    """The INFOCOM spectrogram CNN with four times the filters (32, 64, 128) and dropout 0.3 before the dense
    layer: the default model's network (:data:`~lorarffi.rffi.recipe.RECIPE`). ``widths`` and ``dropout``
    can still be given; training stores the ones used."""
    return InfocomCNN(**hparams)


@register_model("infocom_iq_cnn")
def infocom_iq_cnn(**hparams) -> InfocomIQCNN:
    """The INFOCOM IQ/FFT CNN of Fig. 3b (input (N, 2, L))."""
    return InfocomIQCNN(**hparams)
