"""Several embedding networks of one architecture, trained apart, embedding as one (registered as
``embedding_ensemble``).

Training runs of one recipe that differ only in their seed (initialisation, batches, augmentation draws) end
in extractors whose enrollment figures lie several points apart; the ensemble joins them. A packet's
embedding is the concatenation of the members' unit-norm embeddings divided by the square root of their
number: unit norm again, and the squared Euclidean distance between two packets is the mean of the members'
squared distances, so every distance the k-NN search measures weighs each member's view equally.
``forward`` (the classification of the training devices: evaluation, the CFO-gated hybrid, ONNX) is the mean
of the members' logits.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lorarffi.errors import ConfigError
from lorarffi.rffi.models import build_model, register_model

__all__ = ["EmbeddingEnsemble", "embedding_ensemble", "ENSEMBLE_MODEL"]

ENSEMBLE_MODEL = "embedding_ensemble"
"""Registered name of :class:`EmbeddingEnsemble`."""


class EmbeddingEnsemble(nn.Module):
    """``n_members`` networks ``member`` built with ``member_hparams``; embeddings concatenated.

    Parameters
    ----------
    member : str
        Registered model name of every member (one that gives ``penultimate``, e.g. ``embedding_net``).
    member_hparams : dict
        Its architecture hyper-parameters (as the member's model directory records them).
    n_members : int
        Number of members, at least 2.
    """

    def __init__(self, member: str, member_hparams: dict[str, Any], n_members: int) -> None:
        super().__init__()
        if int(n_members) < 2:
            raise ConfigError(f"n_members={n_members} is not valid: an ensemble has at least 2 members")
        if member == ENSEMBLE_MODEL:
            raise ConfigError("an ensemble's members cannot be ensembles")
        self.members = nn.ModuleList(build_model(member, **member_hparams) for _ in range(int(n_members)))
        if not hasattr(self.members[0], "penultimate"):
            raise ConfigError(f"model={member!r} gives no embedding to join in an ensemble")
        self.member_dim = int(self.members[0].penultimate_dim)
        self.embedding_dim = self.penultimate_dim = self.member_dim * len(self.members)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Model input (N, ...) -> unit-norm embeddings (N, n_members * member_dim): the members' unit-norm
        embeddings side by side, over sqrt(n_members)."""
        parts = [F.normalize(m.penultimate(x), dim=1) for m in self.members]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))

    penultimate = embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model input (N, ...) -> logits (N, n_classes): the mean of the members' logits."""
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


@register_model(ENSEMBLE_MODEL)
def embedding_ensemble(**hparams: Any) -> EmbeddingEnsemble:
    """An ensemble of embedding networks (``member``, ``member_hparams``, ``n_members``)."""
    return EmbeddingEnsemble(**hparams)
