"""An embedding head on a registered backbone: trunk, dense layer, L2 normalisation (registered as
``embedding_net``).

The backbone's trunk (its layers up to the dense layer(s): ``trunk(x) -> (N, trunk_dim)``) feeds a dense
layer to ``embedding_dim`` and the result is L2-normalised: :meth:`EmbeddingNet.embed`. On ``tifs_resnet``
with 512 dimensions this is the TIFS extractor itself (convolutions, dense 24,000 -> 512, L2
normalisation). The backbone's own dense layers (``head_modules``) are removed, and with them what
only they use: the stored hyper-parameters list the backbone's (``dropout`` of ``infocom_cnn_wide``, 0.3,
included, so the backbone is rebuilt as trained), but a dropout before the removed classifier has no effect
here.

So that a metric-trained model also classifies its training devices (evaluation, the CFO-gated hybrid, ONNX),
``forward`` gives nearest-centroid logits: ``logit_scale`` times the cosine similarity of the embedding to
each device's unit centroid (buffers set by training, :meth:`EmbeddingNet.set_centroids`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lorarffi.errors import ConfigError
from lorarffi.rffi.models import build_model, register_model

__all__ = ["EmbeddingNet", "embedding_net", "default_embedding_dim", "DEFAULT_EMBEDDING_DIM"]

# Embedding size when none is asked for: TIFS's 512 on its extractor; 128 on the light backbones (as FaceNet:
# room for far more identities than a fleet holds, 512 bytes per stored reference, and a quarter of the K-NN
# cost of 512 dimensions).
DEFAULT_EMBEDDING_DIM = 128
_BACKBONE_EMBEDDING_DIM = {"tifs_resnet": 512}


def default_embedding_dim(backbone: str) -> int:
    """The embedding size used on ``backbone`` when none is given (512 on ``tifs_resnet``, else 128)."""
    return _BACKBONE_EMBEDDING_DIM.get(backbone, DEFAULT_EMBEDDING_DIM)


class EmbeddingNet(nn.Module):
    """Backbone trunk -> dense -> L2 normalisation; ``forward`` gives nearest-centroid logits.

    Parameters
    ----------
    backbone : str
        Registered model whose trunk is used; it must define ``trunk``, ``trunk_dim`` and ``head_modules``.
    n_classes : int
        Training devices (rows of the centroid head).
    embedding_dim : int, optional
        Size of the embedding (default :func:`default_embedding_dim`).
    **backbone_hparams
        The backbone's architecture hyper-parameters (``input_shape``, ``in_channels``, widths, ...).
    """

    def __init__(
        self, backbone: str, n_classes: int, embedding_dim: int | None = None, **backbone_hparams
    ) -> None:
        super().__init__()
        net = build_model(backbone, n_classes=n_classes, **backbone_hparams)
        if not all(hasattr(net, a) for a in ("trunk", "trunk_dim", "head_modules")):
            raise ConfigError(f"model={backbone!r} has no trunk to put an embedding head on")
        dim = default_embedding_dim(backbone) if embedding_dim is None else int(embedding_dim)
        if dim < 2:
            raise ConfigError(f"embedding_dim={embedding_dim} is not valid: use at least 2")
        for name in net.head_modules:
            delattr(net, name)
        self.backbone = net
        self.embedding_dim = self.penultimate_dim = dim
        self.dense = nn.Linear(net.trunk_dim, dim)
        self.register_buffer("centroids", torch.zeros(n_classes, dim))
        self.register_buffer("logit_scale", torch.ones(()))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Model input (N, ...) -> unit-norm embeddings (N, embedding_dim)."""
        return F.normalize(self.dense(self.backbone.trunk(x)), dim=1)

    penultimate = embed  # the centroid head's input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model input (N, ...) -> logits (N, n_classes): ``logit_scale`` x cosine similarity to the
        centroids."""
        return self.logit_scale * (self.embed(x) @ self.centroids.T)

    @torch.no_grad()
    def set_centroids(self, centroids: torch.Tensor, logit_scale: float) -> None:
        """Set the head: device centroids (n_classes, embedding_dim), normalised here, and the logit scale."""
        self.centroids.copy_(F.normalize(centroids.to(self.centroids), dim=1))
        self.logit_scale.fill_(float(logit_scale))


@register_model("embedding_net")
def embedding_net(**hparams) -> EmbeddingNet:
    """An embedding head on a registered backbone (``backbone=...``, ``n_classes``, ``embedding_dim``)."""
    return EmbeddingNet(**hparams)
