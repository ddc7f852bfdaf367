"""Metric-learning objectives for the embedding extractor: losses, class-balanced batches, validation.

The losses and the miner are pytorch-metric-learning's: ``triplet`` (triplet margin loss on the batch's
semi-hard triplets, mined online), ``supcon`` (supervised contrastive loss), ``arcface`` (additive angular
margin on learned class prototypes). They train :class:`~lorarffi.rffi.models.embedding.EmbeddingNet`
(:func:`network_spec`). Batches hold several packets of each of their devices (:func:`balanced_batches`,
deterministic from the seed and epoch). Validation embeds the packets without augmentation and scores
nearest-centroid classification against the training packets' device centroids
(:func:`validate_embeddings`), which also sets the model's centroid head.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError

__all__ = [
    "OBJECTIVES",
    "METRIC_OBJECTIVES",
    "PACKETS_PER_DEVICE",
    "CENTROID_PACKETS",
    "TRIPLET_MARGIN",
    "SUPCON_TEMPERATURE",
    "canonical_objective",
    "is_metric",
    "network_spec",
    "balanced_batches",
    "MetricObjective",
    "build_objective",
    "embed_features",
    "centroid_rows",
    "class_centroids",
    "fit_logit_scale",
    "centroid_loss",
    "validate_embeddings",
]

OBJECTIVES = ("softmax", "triplet", "supcon", "arcface")
METRIC_OBJECTIVES = ("triplet", "supcon", "arcface")
_ALIASES = {"classifier": "softmax"}  # the softmax objective's earlier name

PACKETS_PER_DEVICE = 4  # packets of each device in a metric batch (more when the fleet is smaller than B / 4)
CENTROID_PACKETS = 100  # training packets per device the validation centroids are made of (enrollment's 100)
TRIPLET_MARGIN = 0.1  # margin of the triplet loss and the semi-hard miner, Euclidean on the unit sphere
SUPCON_TEMPERATURE = 0.1
_LOGIT_SCALES = np.geomspace(1.0, 100.0, 49)  # candidate logit scales of the centroid head, about 10 % apart


def canonical_objective(name: str) -> str:
    """``name`` as one of :data:`OBJECTIVES` (``"classifier"`` is ``"softmax"``); anything else is refused."""
    obj = _ALIASES.get(name, name)
    if obj not in OBJECTIVES:
        raise ConfigError(f"objective={name!r} is not valid: use one of {', '.join(OBJECTIVES)}")
    return obj


def is_metric(objective: str) -> bool:
    """True for the objectives that train an embedding (everything but softmax)."""
    return canonical_objective(objective) in METRIC_OBJECTIVES


def network_spec(
    model: str, hparams: dict[str, Any], objective: str, embedding_dim: int | None
) -> tuple[str, dict[str, Any]]:
    """The registered name and hyper-parameters of the network an objective trains: the model itself for
    softmax, else ``embedding_net`` on it (``embedding_dim`` None: the backbone's default)."""
    if not is_metric(objective):
        return model, dict(hparams)
    from lorarffi.rffi.models.embedding import default_embedding_dim

    dim = default_embedding_dim(model) if embedding_dim is None else int(embedding_dim)
    return "embedding_net", {**hparams, "backbone": model, "embedding_dim": dim}


def balanced_batches(
    labels: npt.NDArray[np.int64],
    train_idx: npt.NDArray[np.int64],
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    per_device: int = PACKETS_PER_DEVICE,
) -> list[tuple[int, npt.NDArray[np.int64]]]:
    """The batches of one metric-learning epoch: ``(step, packet indices)``, each with ``m`` packets of each
    of ``n`` devices.

    ``n = min(K, max(2, batch_size // per_device))`` devices (K in the training split) drawn without
    replacement per batch, ``m = batch_size // n`` packets of each, taken from a per-device permutation that
    is drawn again when used up (a device with fewer than ``m`` packets repeats some).
    ``len(train_idx) // (n m)`` batches (at least one): an epoch holds about as many packets as the split.
    Every draw comes from ``(seed, epoch)``.
    """
    rng = np.random.default_rng([seed, epoch, 0xBA7C4])
    y = labels[train_idx]
    classes = np.unique(y)
    n_dev = min(classes.size, max(2, batch_size // per_device))
    m = batch_size // n_dev
    pools = [train_idx[y == c] for c in classes]
    perms = [rng.permutation(p) for p in pools]
    pos = [0] * classes.size

    def take(c: int) -> list[int]:
        out: list[int] = []
        while len(out) < m:
            if pos[c] == perms[c].size:
                perms[c], pos[c] = rng.permutation(pools[c]), 0
            k = min(m - len(out), perms[c].size - pos[c])
            out.extend(perms[c][pos[c] : pos[c] + k].tolist())
            pos[c] += k
        return out

    n_steps = max(1, train_idx.size // (n_dev * m))
    batches = []
    for step in range(n_steps):
        picked = rng.choice(classes.size, n_dev, replace=False)
        batches.append((step, np.array([i for c in picked for i in take(int(c))], dtype=np.int64)))
    return batches


class MetricObjective:
    """A pytorch-metric-learning loss (and miner) on a batch of embeddings.

    Calling it with unit embeddings (B, D) and class indices (B,) gives ``(loss, n_correct)``: the loss (mean
    over what the loss averages) and how many packets are nearest, by mean cosine similarity, to the batch's
    other packets of their own device (the training accuracy the epoch reports).

    Attributes
    ----------
    name : str
        The objective.
    loss : torch.nn.Module
        The loss (``arcface``'s holds trainable class prototypes: give its parameters to the optimiser).
    miner : torch.nn.Module or None
        The online triplet miner (``triplet`` only).
    """

    def __init__(self, name: str, loss: Any, miner: Any = None) -> None:
        self.name = name
        self.loss = loss
        self.miner = miner

    def __call__(self, emb: Any, y: Any) -> tuple[Any, int]:
        import torch

        pairs = self.miner(emb, y) if self.miner is not None else None
        loss = self.loss(emb, y, pairs)
        with torch.no_grad():
            sim = emb @ emb.T
            onehot = torch.nn.functional.one_hot(y).to(sim.dtype)  # (B, K)
            others = onehot.sum(0, keepdim=True) - onehot  # packets of each device but the row's own
            mean_sim = (sim @ onehot - torch.diagonal(sim)[:, None] * onehot) / others.clamp(min=1)
            mean_sim = mean_sim.masked_fill(others == 0, -torch.inf)
            n_correct = int((mean_sim.argmax(1) == y).sum())
        return loss, n_correct


def build_objective(name: str, n_classes: int, embedding_dim: int, seed: int) -> MetricObjective:
    """The loss (and miner) of metric objective ``name``; ``arcface``'s prototypes are drawn from ``seed``
    (torch's global RNG left as it was)."""
    import torch
    from pytorch_metric_learning import losses, miners

    name = canonical_objective(name)
    if name == "triplet":
        return MetricObjective(
            name,
            losses.TripletMarginLoss(margin=TRIPLET_MARGIN),
            miners.TripletMarginMiner(margin=TRIPLET_MARGIN, type_of_triplets="semihard"),
        )
    if name == "supcon":
        return MetricObjective(name, losses.SupConLoss(temperature=SUPCON_TEMPERATURE))
    if name == "arcface":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 0xA2C)
            return MetricObjective(name, losses.ArcFaceLoss(n_classes, embedding_dim))
    raise ConfigError(f"objective={name!r} trains no embedding: use one of {', '.join(METRIC_OBJECTIVES)}")


def embed_features(
    model: Any, features: npt.NDArray[np.floating], torch_device: Any, batch_size: int = 256
) -> npt.NDArray[np.float32]:
    """Unit embeddings (N, D) float32 of model inputs ``features`` (N, ...) by ``model.embed`` (put in eval
    mode)."""
    import torch

    from lorarffi.rffi.models import channels_last_batch

    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(features), batch_size):
            x = channels_last_batch(torch.from_numpy(np.ascontiguousarray(features[s : s + batch_size])))
            out.append(model.embed(x.to(torch_device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.embedding_dim), np.float32)


def centroid_rows(
    labels: npt.NDArray[np.int64], train_idx: npt.NDArray[np.int64], per_device: int = CENTROID_PACKETS
) -> npt.NDArray[np.int64]:
    """The training packets the centroids are made of: every one of a device with at most ``per_device``,
    else ``per_device`` evenly spaced over its training packets (in file order)."""
    rows = []
    for c in np.unique(labels[train_idx]):
        idx = train_idx[labels[train_idx] == c]
        if idx.size > per_device:
            idx = idx[np.linspace(0, idx.size - 1, per_device).round().astype(np.int64)]
        rows.append(idx)
    return np.sort(np.concatenate(rows))


def class_centroids(
    emb: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], n_classes: int
) -> npt.NDArray[np.float32]:
    """Unit mean embedding of each class, (n_classes, D); a class without packets gets a zero row."""
    sums = np.zeros((n_classes, emb.shape[1]), np.float64)
    np.add.at(sums, labels, emb.astype(np.float64))
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def centroid_loss(cos: npt.NDArray[np.floating], labels: npt.NDArray[np.int64], scale: float) -> float:
    """Mean cross-entropy of the logits ``scale * cos`` (N, K) against class indices ``labels`` (N,)."""
    z = scale * np.asarray(cos, np.float64)
    zmax = z.max(axis=1, keepdims=True)
    lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
    return float(np.mean(lse - z[np.arange(z.shape[0]), labels])) if z.shape[0] else 0.0


def fit_logit_scale(cos: npt.NDArray[np.floating], labels: npt.NDArray[np.int64]) -> float:
    """The logit scale (1 to 100, about 10 % steps) under which the centroid head's cross-entropy on
    ``cos`` (N, K) with class indices ``labels`` (N,) is lowest (temperature scaling); 1 for no packets."""
    if len(labels) == 0:
        return 1.0
    losses_ = [centroid_loss(cos, labels, s) for s in _LOGIT_SCALES]
    return float(_LOGIT_SCALES[int(np.argmin(losses_))])


def validate_embeddings(
    model: Any,
    features: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    train_idx: npt.NDArray[np.int64],
    val_idx: npt.NDArray[np.int64],
    torch_device: Any,
) -> tuple[float, float]:
    """Score an embedding model on the validation split and set its centroid head.

    The centroids are the unit mean embeddings of each device's training packets (:func:`centroid_rows`,
    without augmentation); each validation packet is given the device of the nearest centroid (highest cosine
    similarity). The logit scale is fitted on the validation packets (:func:`fit_logit_scale`).

    Parameters
    ----------
    model : EmbeddingNet
    features : ndarray of float32, shape (N, ...)
        Model input of every packet.
    labels : ndarray of int64, shape (N,)
        Class index of every packet.
    train_idx, val_idx : ndarray of int64
        The training and validation packets.
    torch_device : torch.device

    Returns
    -------
    val_loss : float
        Cross-entropy of the centroid head (the fitted scale times the cosine similarities) on the validation
        packets: what early stopping and the learning-rate schedule watch.
    val_acc : float
        Nearest-centroid accuracy on the validation packets (0 for none).
    """
    import torch

    n_classes = int(model.centroids.shape[0])
    rows = centroid_rows(labels, train_idx)
    centroids = class_centroids(embed_features(model, features[rows], torch_device), labels[rows], n_classes)
    cos = embed_features(model, features[val_idx], torch_device) @ centroids.T
    y = labels[val_idx]
    scale = fit_logit_scale(cos, y)
    model.set_centroids(torch.from_numpy(centroids), scale)
    acc = float(np.mean(cos.argmax(axis=1) == y)) if y.size else 0.0
    return centroid_loss(cos, y, scale), acc
