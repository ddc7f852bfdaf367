"""Train a closed-set classifier or an embedding extractor on stored preambles and write a model directory.

:func:`train` is a short recipe of the functions below, each with one job: preprocess every packet once
(:func:`prepare_data`), build the seeded network and place it for (data-parallel) training
(:func:`build_network`, :func:`place_model`), build the optimiser and the plateau scheduler, start or resume
(:func:`start_or_resume`), then per epoch cut the shuffled global batches (:func:`epoch_batches`), augment
them (:func:`batch_features`), train on this process's shard (:func:`train_one_epoch`), score the validation
split (:func:`validate`), record the epoch (:func:`record_epoch`) and write the best model and the resumable
state (:func:`save_train_state`). The metric objectives (triplet, supervised contrastive, angular margin)
take their loss, class-balanced batches and nearest-centroid validation from :mod:`lorarffi.rffi.metric`.

Every random draw (split, initialisation, batch order, augmentation, dropout) derives from ``seed`` and the
epoch/batch number, so a resumed run ends with the weights of an uninterrupted one. Under
``torch.distributed`` each process takes a slice of every global batch, batch norm uses global-batch
statistics and the loss is scaled so the averaged gradient is the single-process gradient of the global batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lorarffi.datasets.atomic import write_atomic
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.normalize import rms_normalize
from lorarffi.dsp.representation import RepresentationConfig
from lorarffi.errors import ConfigError, ModelError
from lorarffi.rffi import metric
from lorarffi.rffi.augment import Augmenter
from lorarffi.rffi.checkpoint import ModelDirConfig, fingerprint_arrays, save_model_dir
from lorarffi.rffi.features import compute_features, shape_hparams
from lorarffi.rffi.hybrid import DEFAULT_CARRIER_HZ, CfoGate, GateParams
from lorarffi.rffi.preprocess import preprocess_preambles
from lorarffi.rffi.pseudo_devices import add_pseudo_devices
from lorarffi.rffi.recipe import (
    RECIPE,
    recipe_aug_snr_db,
    recipe_budget,
    recipe_members,
    recipe_representation,
)

__all__ = [
    "DEFAULT_REPRESENTATION",
    "STATE_DIR",
    "BY_RECIPE",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "TrainState",
    "EpochStats",
    "train",
    "has_train_state",
    "select_torch_device",
    "split_train_val",
    "prepare_data",
    "gate_params",
    "build_network",
    "place_model",
    "build_optimizer",
    "build_scheduler",
    "epoch_batches",
    "shard",
    "augmented_features",
    "batch_features",
    "train_one_epoch",
    "validate",
    "record_epoch",
    "stop_reason",
    "model_dir_config",
    "save_train_state",
    "load_train_state",
    "start_or_resume",
]

log = logging.getLogger(__name__)

DEFAULT_REPRESENTATION: dict[str, Any] = recipe_representation()
STATE_DIR = "train_state"
_MEMBER_DONE = "member_done.json"  # in an ensemble member's directory once its training ended


class _ByRecipe:
    """Type of :data:`BY_RECIPE`."""

    def __repr__(self) -> str:
        return "BY_RECIPE"


BY_RECIPE = _ByRecipe()
"""Default of :attr:`TrainConfig.max_time_s`: the recipe's cap for the objective (None there means no cap)."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train (everything but the data). The defaults are the default model's recipe
    (:data:`lorarffi.rffi.recipe.RECIPE`) with :class:`~lorarffi.rffi.hybrid.GateParams`'s gate.

    Parameters
    ----------
    model : str
        Registered model name.
    model_hparams : dict
        Extra architecture hyper-parameters (``n_classes`` and the input shape are filled in).
    representation : dict or None
        ``{"name": ..., "params": {...}}`` of :class:`lorarffi.dsp.representation.RepresentationConfig`
        (None: the recipe's for the objective, :func:`lorarffi.rffi.recipe.recipe_representation`; a copy made
        with :func:`dataclasses.replace` keeps the representation already chosen).
    compensate_cfo : bool
        Remove each packet's CFO before the representation (False only to measure what it buys).
    objective : {"softmax", "triplet", "supcon", "arcface"}
        Softmax classification (cross-entropy; ``"classifier"`` is its earlier name), or an embedding trained
        with a metric loss (:mod:`lorarffi.rffi.metric`).
    embedding_dim : int or None
        Embedding size of a metric objective (None: 512 on ``tifs_resnet``, else 128); not for softmax, whose
        embedding is the network's penultimate layer.
    optimizer : {"adam", "rmsprop"}
        Optimiser.
    lr : float
        Initial learning rate.
    epochs : int or None
        Most epochs (None: the recipe's for the objective, :func:`lorarffi.rffi.recipe.recipe_budget`).
    batch_size : int
        Global mini-batch size (over all processes).
    lr_factor, lr_patience : float, int
        Multiply the learning rate by ``lr_factor`` after ``lr_patience`` epochs without a lower val. loss.
    early_stop_patience : int
        Stop after this many epochs without a lower validation loss.
    val_split : float
        Fraction of packets held out for validation.
    augment : tuple of str
        Per-batch augmentation kinds (``awgn``, ``multipath``, ``cfo``).
    aug_snr_db : tuple of float or None
        SNR range of the AWGN augmentation, dB (None: the recipe's for the objective,
        :func:`lorarffi.rffi.recipe.recipe_aug_snr_db`; a copy made with :func:`dataclasses.replace` keeps the
        range already chosen).
    seed : int
        Seed of every random draw.
    max_time_s : float or None
        Stop after the epoch during which this much wall time has passed, s (None: no cap; the default
        :data:`BY_RECIPE`: the recipe's cap for the objective, :func:`lorarffi.rffi.recipe.recipe_budget`; a
        copy made with :func:`dataclasses.replace` keeps the budget already chosen, as it keeps ``epochs``).
    weight_decay : float
        Decoupled (AdamW) or L2 (RMSprop) weight decay.
    pseudo_devices : int
        Pseudo-devices per training device for a metric objective: copies of its training packets through
        one fixed transmitter transform each, trained as devices of their own
        (:mod:`lorarffi.rffi.pseudo_devices`; 0, the default: none; softmax takes none).
    members : int or None
        Training runs joined into the model (:mod:`lorarffi.rffi.ensemble`: member ``i`` trains with seed
        ``seed + i``, each under the whole budget); more than 1 only for a metric objective (None: the
        recipe's for the objective, :func:`lorarffi.rffi.recipe.recipe_members`).
    gate : GateParams
        Parameters of the CFO gate stored with the model.
    """

    model: str = RECIPE.model
    model_hparams: dict[str, Any] = field(default_factory=dict)
    representation: dict[str, Any] | None = None
    compensate_cfo: bool = RECIPE.compensate_cfo
    objective: str = RECIPE.objective
    embedding_dim: int | None = None
    optimizer: Literal["adam", "rmsprop"] = RECIPE.optimizer
    lr: float = RECIPE.lr
    epochs: int | None = None
    batch_size: int = RECIPE.batch_size
    lr_factor: float = RECIPE.lr_factor
    lr_patience: int = RECIPE.lr_patience
    early_stop_patience: int = RECIPE.early_stop_patience
    val_split: float = RECIPE.val_split
    augment: tuple[str, ...] = RECIPE.augment
    aug_snr_db: tuple[float, float] | None = None
    seed: int = RECIPE.seed
    max_time_s: float | None | _ByRecipe = BY_RECIPE
    weight_decay: float = RECIPE.weight_decay
    pseudo_devices: int = 0
    members: int | None = None
    gate: GateParams = field(default_factory=GateParams)

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", metric.canonical_objective(self.objective))
        is_metric = metric.is_metric(self.objective)
        if self.aug_snr_db is None:
            object.__setattr__(self, "aug_snr_db", recipe_aug_snr_db(is_metric))
        if self.representation is None:
            object.__setattr__(self, "representation", recipe_representation(metric=is_metric))
        epochs, max_time_s = recipe_budget(is_metric)
        if self.epochs is None:
            object.__setattr__(self, "epochs", epochs)
        if isinstance(self.max_time_s, _ByRecipe):
            object.__setattr__(self, "max_time_s", max_time_s)
        if self.members is None:
            object.__setattr__(self, "members", recipe_members(is_metric))
        if self.members < 1 or (self.members > 1 and not is_metric):
            raise ConfigError(
                f"members={self.members} is not valid with objective={self.objective!r}: use 1, or more "
                "with a metric objective (an ensemble joins embeddings)"
            )
        if self.pseudo_devices and not is_metric:
            raise ConfigError(
                f"pseudo_devices={self.pseudo_devices} is not valid with objective={self.objective!r}: "
                "pseudo-devices train an embedding (a metric objective); a classifier's classes are its "
                "devices"
            )
        if self.pseudo_devices < 0:
            raise ConfigError(f"pseudo_devices={self.pseudo_devices} is not valid: use 0 or more")
        if self.embedding_dim is not None and not (is_metric and self.embedding_dim >= 2):
            raise ConfigError(
                f"embedding_dim={self.embedding_dim} is not valid with objective={self.objective!r}: a "
                "metric objective takes at least 2 (a softmax model's embedding is its penultimate layer)"
            )
        if is_metric and self.batch_size < 4:
            raise ConfigError(
                f"batch_size={self.batch_size} is too small for objective={self.objective!r}: "
                "use at least 4 (2 devices x 2 packets)"
            )
        if self.optimizer not in ("adam", "rmsprop"):
            raise ConfigError(f"optimizer={self.optimizer!r} is not valid: use 'adam' or 'rmsprop'")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr={self.lr} is not valid: use a positive learning rate")
        if self.epochs < 1:
            raise ConfigError(f"epochs={self.epochs} is not valid: use at least 1")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} is not valid: use at least 1")
        if not 0 < self.val_split < 1:
            raise ConfigError(f"val_split={self.val_split} is not valid: use a fraction between 0 and 1")
        if not 0 < self.lr_factor <= 1:
            raise ConfigError(f"lr_factor={self.lr_factor} is not valid: use 0 < lr_factor <= 1")
        Augmenter(tuple(self.augment), 1.0)  # validates the kinds

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["gate"] = self.gate.to_dict()
        d["augment"] = list(self.augment)
        d["aug_snr_db"] = list(self.aug_snr_db)
        return d


@dataclass(frozen=True)
class TrainResult:
    """Summary of a training run.

    Attributes
    ----------
    model_dir : pathlib.Path
        Where the best model was written.
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``lr``, ``time_s``.
    best_epoch : int or None
        Epoch (1-based) of the kept weights (None for an ensemble: each member has its own).
    best_val_loss, best_val_acc : float
        Validation loss and accuracy of the kept weights (an ensemble: the mean of its members').
    stopped : str
        ``"epochs"``, ``"early_stop"`` or ``"time_limit"`` (an ensemble: its members', comma-separated).
    elapsed_s : float
        Wall time of this call, s.
    members : tuple of TrainResult
        An ensemble's members' results, in member order (empty for one network); ``history`` then holds their
        epochs one member after the other, each record with its ``member``.
    """

    model_dir: pathlib.Path
    history: list[dict[str, float]]
    best_epoch: int | None
    best_val_loss: float
    best_val_acc: float
    stopped: str
    elapsed_s: float
    members: tuple[TrainResult, ...] = ()


@dataclass(frozen=True)
class TrainingData:
    """Training packets prepared once (:func:`prepare_data`).

    Attributes
    ----------
    classes : ndarray of int64, shape (K,)
        Device ids in class order (sorted).
    labels : ndarray of int64, shape (N,)
        Class index of every packet.
    train_idx, val_idx : ndarray of int64
        Sorted packet indices of the training and validation splits.
    features : ndarray of float32, shape (N, ...)
        Un-augmented model input of every packet.
    preprocessed_iq : ndarray of complex64, shape (N, L) or None
        CFO-compensated unit-RMS packets, kept only when training augments them.
    gate : CfoGate or None
        CFO statistics of the training split's preamble rows; None when a device has none (no gate).
    fingerprint : str
        Identity of the data (:func:`~lorarffi.rffi.checkpoint.fingerprint_arrays`).

    With pseudo-devices (``TrainConfig.pseudo_devices``) their packets follow the real ones in ``labels``,
    ``features`` and ``preprocessed_iq``, with classes from ``K`` up, and are in ``train_idx`` only.
    """

    classes: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int64]
    train_idx: npt.NDArray[np.int64]
    val_idx: npt.NDArray[np.int64]
    features: npt.NDArray[np.float32]
    preprocessed_iq: npt.NDArray[np.complex64] | None
    gate: CfoGate | None
    fingerprint: str

    @property
    def device_train_idx(self) -> npt.NDArray[np.int64]:
        """The training split's packets of the real devices (without pseudo-devices)."""
        return self.train_idx[self.labels[self.train_idx] < self.classes.size]

    @property
    def n_labels(self) -> int:
        """Classes the training batches hold: the devices and their pseudo-devices."""
        return int(self.labels.max()) + 1 if self.labels.size else 0


@dataclass
class TrainState:
    """Progress of a run, saved after every epoch (``train_state/state.json``, key ``meta``)."""

    epoch: int = 0
    best_val_loss: float = math.inf
    best_val_acc: float = 0.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    fingerprint: str = ""
    elapsed_s: float = 0.0
    train_config: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class EpochStats:
    """What one epoch of :func:`train_one_epoch` saw on this process.

    Attributes
    ----------
    loss_sum : float
        Summed cross-entropy over the global batches (every process holds the same value only after the
        gradients' all-reduce; this is this process's share scaled to the global batch).
    n_correct : int
        Training packets of this process's shards classified right.
    n_seen : int
        Training packets in this process's shards.
    """

    loss_sum: float
    n_correct: int
    n_seen: int

    def mean_loss(self, world_size: int = 1) -> float:
        """Mean training loss per packet over all processes."""
        return self.loss_sum / max(self.n_seen * world_size, 1)

    @property
    def accuracy(self) -> float:
        """Training accuracy over this process's shards."""
        return self.n_correct / max(self.n_seen, 1)


# -- setup --


def select_torch_device(torch_device: Any = None) -> Any:
    """The torch device to train on: ``torch_device`` if given, else the current CUDA device (the local
    rank's under torchrun) when CUDA is available, else the CPU."""
    import torch

    if torch_device is not None:
        return torch.device(torch_device)
    return torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")


def split_train_val(
    labels: npt.NDArray[np.int64], val_split: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Stratified random split: about ``val_split`` of every class (at least one packet of a class with two or
    more) goes to validation.

    Returns
    -------
    train_idx, val_idx : ndarray of int64
        Sorted packet indices.
    """
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = max(1, int(round(val_split * idx.size))) if idx.size > 1 else 0
        val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(labels.size), val_idx)
    return train_idx, val_idx


def prepare_data(
    iq: npt.ArrayLike,
    device_ids: npt.ArrayLike,
    cfg: LoRaConfig,
    tc: TrainConfig,
    data_info: dict[str, Any] | None = None,
) -> TrainingData:
    """Check the packets, split them, preprocess each once, fit the CFO gate, compute the features.

    Parameters
    ----------
    iq : array_like of complex64, shape (N, L)
        Aligned preambles, not CFO-compensated; ``L >= cfg.preamble_samples``.
    device_ids : array_like of int, shape (N,)
        Device id of every packet.
    cfg : LoRaConfig
        LoRa parameters of the data.
    tc : TrainConfig
        Seed, validation fraction, CFO compensation, representation, augmentation, gate parameters.
    data_info : dict, optional
        Source description, part of the data fingerprint; its ``carrier_hz`` (Hz), when there, is the CFO
        gate's carrier unless ``tc.gate`` names one (:func:`gate_params`).
    """
    x_raw = np.asarray(iq)
    if x_raw.ndim != 2:
        raise ConfigError(f"iq has shape {x_raw.shape}, expected (N, L)")
    x_raw = x_raw[:, : cfg.preamble_samples].astype(np.complex64, copy=False)
    ids = np.asarray(device_ids, dtype=np.int64).reshape(-1)
    if ids.size != x_raw.shape[0]:
        raise ConfigError(f"device_ids has {ids.size} entries but iq has {x_raw.shape[0]} rows")
    classes, labels = np.unique(ids, return_inverse=True)
    labels = labels.astype(np.int64)
    if classes.size < 2:
        raise ConfigError(f"training data holds {classes.size} device(s); a classifier needs at least 2")
    fingerprint = fingerprint_arrays(x_raw, ids, extra={"data": data_info or {}})
    train_idx, val_idx = split_train_val(labels, tc.val_split, np.random.default_rng([tc.seed, 0xC0FFEE]))
    source = (data_info or {}).get("file", "training data")
    pre = preprocess_preambles(x_raw, cfg, compensate=tc.compensate_cfo, source=source)
    fit = train_idx[pre.is_preamble[train_idx]]  # the gate learns from the rows with a CFO estimate
    gate = None
    if np.unique(labels[fit]).size == classes.size:
        gate = CfoGate.fit(pre.cfo_hz[fit], labels[fit], classes, gate_params(tc.gate, data_info))
    else:
        log.warning("%s: some devices have no preamble row to learn a CFO from: the model gets no CFO gate "
                    "(its hybrid decision is the CNN's)", source)
    features, x = compute_features(pre.iq, tc.representation), pre.iq
    if tc.pseudo_devices:
        extra_iq, extra_labels = add_pseudo_devices(
            pre.iq[train_idx], labels[train_idx], tc.pseudo_devices, cfg,
            np.random.default_rng([tc.seed, 0x95E0D]), n_classes=int(classes.size),
        )
        features = np.concatenate([features, compute_features(extra_iq, tc.representation)])
        x = np.concatenate([x, extra_iq])
        train_idx = np.concatenate([train_idx, labels.size + np.arange(extra_labels.size)])
        labels = np.concatenate([labels, extra_labels])
        log.info("%s: %d pseudo-devices per device, %d packets added to the training split", source,
                 tc.pseudo_devices, extra_labels.size)
    return TrainingData(
        classes=classes,
        labels=labels,
        train_idx=train_idx,
        val_idx=val_idx,
        features=features,
        preprocessed_iq=x if tc.augment else None,
        gate=gate,
        fingerprint=fingerprint,
    )


_PER_SYMBOL_REPRESENTATIONS = (
    "folded_channel_independent_spectrogram",
    "coherent_channel_independent_spectrogram",
)


def representation_for(representation: dict[str, Any], cfg: LoRaConfig) -> dict[str, Any]:
    """``representation`` with the parameters it takes from the LoRa configuration stated.

    The folded and the coherent channel-independent spectrograms work on one symbol: without
    ``period_frames`` they get ``cfg.samples_per_symbol / hop`` (8 at SF7, 125 kHz, 1 MS/s and the default
    128-sample hop), so the saved model says what it was trained on. Other representations are returned
    unchanged.
    """
    name = representation.get("name")
    if name not in _PER_SYMBOL_REPRESENTATIONS:
        return representation
    params = dict(representation.get("params") or {})
    if "period_frames" in params:
        return representation
    hop = int(RepresentationConfig.from_dict(representation).params_with_defaults()["hop"])
    if cfg.samples_per_symbol % hop:
        raise ConfigError(
            f"{name}: hop={hop} does not divide the {cfg.samples_per_symbol} "
            "samples of a symbol; give a hop that does"
        )
    return {**representation, "params": {**params, "period_frames": cfg.samples_per_symbol // hop}}


def gate_params(params: GateParams, data_info: dict[str, Any] | None = None) -> GateParams:
    """``params`` with the carrier stated: theirs, else the data's (``data_info["carrier_hz"]``), else
    :data:`~lorarffi.rffi.hybrid.DEFAULT_CARRIER_HZ`; the saved gate then says what its ppm refer to."""
    if params.carrier_hz is not None:
        return params
    carrier_hz = (data_info or {}).get("carrier_hz") or DEFAULT_CARRIER_HZ
    return dataclasses.replace(params, carrier_hz=float(carrier_hz))


def build_network(name: str, hparams: dict[str, Any], seed: int) -> Any:
    """The registered model ``name`` initialised from ``seed`` (torch's global RNG left as it was)."""
    import torch

    from lorarffi.rffi.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, **hparams)


def place_model(model: Any, torch_device: Any, world_size: int = 1) -> Any:
    """Move ``model`` (in place) to ``torch_device`` in channels-last layout; with ``world_size > 1`` give it
    global-batch batch norm and return it wrapped in ``DistributedDataParallel``.

    Returns
    -------
    train_model : torch.nn.Module
        The module to call in training (``model`` itself when not distributed).
    """
    import torch

    from lorarffi.rffi import ddp

    # Channels-last (NHWC) weights and batches: the same numbers; oneDNN's backward pass is faster.
    model.to(torch_device, memory_format=torch.channels_last)
    if world_size <= 1:
        return model
    ddp.convert_batchnorm(model)
    model.to(torch_device, memory_format=torch.channels_last)
    on_cuda = torch.device(torch_device).type == "cuda"
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch_device] if on_cuda else None)


def build_optimizer(model: Any, tc: TrainConfig) -> Any:
    """Adam (AdamW with decoupled weight decay when ``tc.weight_decay``) or RMSprop with the Keras defaults
    the authors trained with (``alpha=0.9``, ``eps=1e-7``), over ``model``'s trainable parameters."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if tc.optimizer == "adam":
        if tc.weight_decay:
            return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        return torch.optim.Adam(params, lr=tc.lr)
    return torch.optim.RMSprop(params, lr=tc.lr, alpha=0.9, eps=1e-7, weight_decay=tc.weight_decay)


def build_scheduler(optimizer: Any, tc: TrainConfig) -> Any:
    """Multiply the learning rate by ``tc.lr_factor`` after ``tc.lr_patience`` epochs without a lower
    validation loss."""
    import torch

    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=tc.lr_factor, patience=tc.lr_patience)


# -- one epoch --


def epoch_batches(
    train_idx: npt.NDArray[np.int64], batch_size: int, *, seed: int, epoch: int, world_size: int = 1
) -> list[tuple[int, npt.NDArray[np.int64]]]:
    """The global batches of one epoch: ``(step, packet indices)``.

    The training packets in an order drawn from ``(seed, epoch)``, cut into ``len(train_idx) // batch_size``
    full batches (the remainder waits for another epoch's order); fewer packets than ``batch_size`` make one
    batch. A batch smaller than ``world_size`` (nothing for some process) is left out, with its step number.
    """
    n_train = train_idx.size
    rng = np.random.default_rng([seed, epoch])
    order = train_idx[rng.permutation(n_train)]
    n_steps = max(1, n_train // batch_size) if n_train >= batch_size else 1
    batches = [(step, order[step * batch_size : (step + 1) * batch_size]) for step in range(n_steps)]
    return [(step, b) for step, b in batches if b.size >= world_size]


def shard(n_global: int, rank: int, world_size: int) -> slice:
    """Rows of a global batch of ``n_global`` that process ``rank`` of ``world_size`` trains on (contiguous,
    sizes differing by at most one)."""
    return slice(rank * n_global // world_size, (rank + 1) * n_global // world_size)


def augmented_features(
    iq: npt.NDArray[np.complex64],
    augmenter: Augmenter,
    rng: np.random.Generator,
    representation: dict[str, Any],
) -> npt.NDArray[np.float32]:
    """Features of augmented preprocessed packets (normalised to unit RMS again, as the detector would).

    Parameters
    ----------
    iq : ndarray of complex64, shape (B, L)
        Preprocessed packets.
    augmenter : Augmenter
    rng : numpy.random.Generator
        Source of every augmentation draw.
    representation : dict
        The model input's representation config.
    """
    return compute_features(rms_normalize(augmenter(iq, rng)), representation)


def batch_features(
    data: TrainingData,
    batch: npt.NDArray[np.int64],
    augmenter: Augmenter | None,
    tc: TrainConfig,
    *,
    epoch: int,
    step: int,
) -> npt.NDArray[np.float32]:
    """The model input of a global batch: the stored features, or with ``augmenter`` those of freshly
    augmented packets, drawn from ``(tc.seed, epoch, step)``."""
    if augmenter is None:
        return data.features[batch]
    rng = np.random.default_rng([tc.seed, epoch, step])
    return augmented_features(data.preprocessed_iq[batch], augmenter, rng, tc.representation)


def train_one_epoch(
    train_model: Any,
    optimizer: Any,
    batches: Iterable[tuple[npt.NDArray[np.floating], npt.NDArray[np.int64], int]],
    torch_device: Any,
    *,
    world_size: int = 1,
    on_step: Callable[[float], None] | None = None,
    objective: metric.MetricObjective | None = None,
) -> EpochStats:
    """One pass of optimiser steps, one per global batch.

    Parameters
    ----------
    train_model : torch.nn.Module
        From :func:`place_model` (in training mode after this call).
    optimizer : torch.optim.Optimizer
    batches : iterable of (x, y, n_global)
        This process's shard of every global batch: features ``x`` (B, ...) float, class indices ``y`` (B,)
        int64, and the global batch size ``n_global``.
    torch_device : torch.device
    world_size : int
        Processes sharing every global batch. The loss is the shard's summed cross-entropy times
        ``world_size / n_global``, so the gradient averaged over the processes is the global batch's mean.
    on_step : callable, optional
        Called after each step with the mean training loss so far.
    objective : MetricObjective, optional
        A metric loss on the network's embeddings (``train_model.embed``; one process) instead of the
        cross-entropy of its logits.
    """
    import torch
    from torch.nn import functional as F

    from lorarffi.rffi.models import channels_last_batch

    train_model.train()
    loss_sum = 0.0
    n_correct = 0
    n_seen = 0
    for xb, yb, n_global in batches:
        x = channels_last_batch(torch.from_numpy(np.ascontiguousarray(xb)).to(torch_device))
        y = torch.from_numpy(yb).to(torch_device)
        optimizer.zero_grad(set_to_none=True)
        if objective is None:
            z = train_model(x)
            loss = F.cross_entropy(z, y, reduction="sum") * (world_size / n_global)
            correct = int((z.argmax(1) == y).sum())
        else:
            loss, correct = objective(train_model.embed(x), y)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * n_global / world_size
        n_correct += correct
        n_seen += int(y.numel())
        if on_step is not None:
            on_step(loss_sum / max(n_seen * world_size, 1))
    return EpochStats(loss_sum, n_correct, n_seen)


def validate(
    model: Any,
    features: npt.NDArray[np.floating],
    labels: npt.NDArray[np.int64],
    torch_device: Any,
    batch_size: int = 256,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (put in eval mode) on ``features`` (N, ...) with class
    indices ``labels`` (N,); ``(0.0, 0.0)`` for no packets."""
    import torch
    from torch.nn import functional as F

    from lorarffi.rffi.models import channels_last_batch

    model.eval()
    loss = 0.0
    correct = 0
    with torch.no_grad():
        for s in range(0, len(labels), batch_size):
            x = channels_last_batch(torch.from_numpy(features[s : s + batch_size]).to(torch_device))
            y = torch.from_numpy(labels[s : s + batch_size]).to(torch_device)
            z = model(x)
            loss += float(F.cross_entropy(z, y, reduction="sum"))
            correct += int((z.argmax(1) == y).sum())
    n = max(len(labels), 1)
    return loss / n, correct / n


def record_epoch(state: TrainState, rec: dict[str, float]) -> bool:
    """Append an epoch's record (``epoch``, ``val_loss``, ``val_acc``, ...) to ``state``, keep the best
    validation loss and count the epochs without one; True when this epoch is the new best."""
    state.history.append(rec)
    state.epoch = int(rec["epoch"])
    improved = rec["val_loss"] < state.best_val_loss
    if improved:
        state.best_val_loss = rec["val_loss"]
        state.best_val_acc = rec["val_acc"]
        state.best_epoch = state.epoch
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
    return improved


def stop_reason(state: TrainState, tc: TrainConfig, *, run_elapsed_s: float | None = None) -> str | None:
    """``"early_stop"`` after ``tc.early_stop_patience`` epochs without a lower validation loss,
    ``"time_limit"`` once ``tc.max_time_s`` has passed, else None (go on).

    The time cap applies to ``run_elapsed_s``, this run's time (a resumed run gets its whole budget), when
    given; else to ``state.elapsed_s``, the time of every run of the model."""
    if state.bad_epochs >= tc.early_stop_patience:
        return "early_stop"
    elapsed_s = state.elapsed_s if run_elapsed_s is None else run_elapsed_s
    if tc.max_time_s is not None and elapsed_s >= tc.max_time_s:
        return "time_limit"
    return None


def model_dir_config(
    tc: TrainConfig,
    cfg: LoRaConfig,
    data: TrainingData,
    hparams: dict[str, Any],
    best: dict[str, float],
    data_info: dict[str, Any] | None = None,
    world_size: int = 1,
    *,
    model_name: str | None = None,
    embedding_dim: int | None = None,
) -> ModelDirConfig:
    """The model directory's config for the weights of epoch record ``best`` (``epoch``, ``val_loss``,
    ``val_acc``): network (``model_name``, default ``tc.model``), representation, LoRa parameters, classes,
    CFO gate, training settings (with the objective and the size of the network's embedding) and data."""
    return ModelDirConfig(
        model_name=model_name or tc.model,
        model_hparams=hparams,
        representation=dict(tc.representation),
        lora=cfg,
        device_ids=tuple(int(c) for c in data.classes),
        cfo_compensation=tc.compensate_cfo,
        hybrid=None if data.gate is None else data.gate.to_dict(),
        training={
            **tc.to_dict(),
            "embedding_dim": embedding_dim if embedding_dim is not None else tc.embedding_dim,
            "best_epoch": best["epoch"],
            "best_val_loss": best["val_loss"],
            "best_val_acc": best["val_acc"],
            "data": data_info or {},
            "n_train": int(data.device_train_idx.size),
            "n_train_pseudo": int(data.train_idx.size - data.device_train_idx.size),
            "n_val": int(data.val_idx.size),
            "world_size": world_size,
        },
        data_fingerprint=data.fingerprint,
    )


# -- checkpoints --


def save_train_state(
    out: pathlib.Path, model: Any, optimizer: Any, scheduler: Any, state: TrainState
) -> None:
    """Write the resumable state to ``out/train_state/``: weights and optimiser tensors in safetensors, the
    rest in JSON (nothing pickled)."""
    from safetensors.torch import save_file

    d = out / STATE_DIR
    d.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    opt_plain: dict[str, dict[str, Any]] = {}
    for pid, st in opt["state"].items():
        for name, val in st.items():
            if hasattr(val, "detach"):
                tensors[f"opt.{pid}.{name}"] = val.detach().cpu().contiguous()
            else:
                opt_plain.setdefault(str(pid), {})[name] = val
    save_file(tensors, str(d / "state.safetensors.tmp"))
    os.replace(d / "state.safetensors.tmp", d / "state.safetensors")
    sched = {
        k: v for k, v in scheduler.state_dict().items() if isinstance(v, (int, float, str, list, type(None)))
    }
    doc = {
        "meta": state.to_dict(),
        "param_groups": opt["param_groups"],
        "opt_plain": opt_plain,
        "scheduler": sched,
    }
    (d / "state.json.tmp").write_text(json.dumps(doc))
    os.replace(d / "state.json.tmp", d / "state.json")


def _state_file(out: str | os.PathLike) -> pathlib.Path:
    """The JSON part of the resumable state of the run in model directory ``out``."""
    return pathlib.Path(out) / STATE_DIR / "state.json"


def _state_doc(out: pathlib.Path) -> dict[str, Any]:
    """``out``'s saved state document (``meta``: the progress; optimiser and scheduler state)."""
    if not _state_file(out).is_file():
        raise ModelError(f"{out}: nothing to resume (no {STATE_DIR}/state.json)")
    return json.loads(_state_file(out).read_text())


def load_train_state(out: pathlib.Path, model: Any, optimizer: Any, scheduler: Any) -> TrainState:
    """Load ``out/train_state/`` into ``model``, ``optimizer`` and ``scheduler``; return the progress."""
    from safetensors.torch import load_file

    d = out / STATE_DIR
    doc = _state_doc(out)
    tensors = load_file(str(d / "state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    for pid, st in doc["opt_plain"].items():
        opt_state.setdefault(int(pid), {}).update(st)
    optimizer.load_state_dict({"state": opt_state, "param_groups": doc["param_groups"]})
    scheduler.load_state_dict({**scheduler.state_dict(), **doc["scheduler"]})
    return TrainState.from_dict(doc["meta"])


# Settings a resumed run may change: how long it goes on.
_RESUMABLE_CHANGES = frozenset({"epochs", "max_time_s"})


def _changed_settings(saved: dict[str, Any] | None, tc: TrainConfig) -> list[str]:
    """``name: saved -> now`` for every setting of ``tc`` that differs from the interrupted run's."""
    if saved is None:  # state written before settings were saved: nothing to compare
        return []
    now = json.loads(json.dumps(tc.to_dict()))  # the same plain types the saved copy went through
    saved = {**saved, "objective": metric.canonical_objective(str(saved.get("objective", "softmax")))}
    return [
        f"{k}: {saved.get(k)!r} -> {v!r}"
        for k, v in now.items()
        if k not in _RESUMABLE_CHANGES and saved.get(k) != v
    ]


def start_or_resume(
    out: pathlib.Path,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    tc: TrainConfig,
    fingerprint: str,
    *,
    resume: bool,
    rank: int = 0,
) -> TrainState:
    """A fresh :class:`TrainState`, or with ``resume`` the interrupted run's (loaded into the model, optimiser
    and scheduler) when ``out`` holds one for the same data and settings. A fresh start clears old state."""
    if resume and _state_file(out).is_file():
        state = load_train_state(out, model, optimizer, scheduler)
        if state.fingerprint != fingerprint:
            raise ModelError(f"{out}: cannot resume: the training data differ from the interrupted run's")
        changed = _changed_settings(state.train_config, tc)
        if changed:
            raise ModelError(
                f"{out}: cannot resume: settings differ from the interrupted run's ({'; '.join(changed)}); "
                "repeat its command line (only --epochs and the time cap may change)"
            )
        state.train_config = tc.to_dict()
        log.info("resuming %s after epoch %d", out, state.epoch)
        return state
    if not resume and (out / STATE_DIR).exists() and rank == 0:
        for f in (out / STATE_DIR).iterdir():
            f.unlink()
    return TrainState(fingerprint=fingerprint, train_config=tc.to_dict())


class _ProgressBar:
    """A rich progress bar on stderr: steps of the current epoch, the running loss, the epoch's summary."""

    def __init__(self, n_steps: int, first_epoch: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.n_steps = n_steps
        self.bar = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.bar.start()
        self.task = self.bar.add_task("train", total=n_steps, epoch=first_epoch, info="")

    def start_epoch(self, epoch: int) -> None:
        self.bar.reset(self.task, total=self.n_steps, epoch=epoch, info="")

    def step(self, mean_loss: float) -> None:
        self.bar.update(self.task, advance=1, info=f"loss {mean_loss:.4f}")

    def end_epoch(self, rec: dict[str, float]) -> None:
        self.bar.update(
            self.task,
            info=f"loss {rec['train_loss']:.4f} acc {rec['train_acc']:.3f} "
            f"val {rec['val_loss']:.4f}/{rec['val_acc']:.3f} lr {rec['lr']:.2g}",
        )

    def stop(self) -> None:
        self.bar.stop()


# -- the recipe --


def train(
    iq: npt.ArrayLike,
    device_ids: npt.ArrayLike,
    cfg: LoRaConfig,
    out_dir: str | os.PathLike,
    tc: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    torch_device: Any = None,
    data_info: dict[str, Any] | None = None,
    device: Any = None,
) -> TrainResult:
    """Train a classifier or an embedding extractor (``tc.objective``) on stored preambles and write the model
    directory ``out_dir`` (with ``tc.members > 1`` an ensemble: its members trained one after the other in
    ``out_dir/members/<i>/``, then joined, :mod:`lorarffi.rffi.ensemble`).

    Parameters
    ----------
    iq : array_like of complex64, shape (N, L)
        Aligned preambles, not CFO-compensated (as stored by the datasets).
    device_ids : array_like of int, shape (N,)
        Device id of every packet (the file's ids; classes are the sorted distinct ids).
    cfg : LoRaConfig
        LoRa parameters of the data.
    out_dir : path-like
        Model directory to write (weights, config, resumable state).
    tc : TrainConfig, optional
        Training settings (default ``TrainConfig()``: the default model's recipe).
    resume : bool
        Continue from ``out_dir/train_state`` if present (same data and settings).
    progress : bool
        Show a progress bar with loss/accuracy/lr on stderr.
    torch_device : torch.device or str, optional
        Where to train; default CUDA when available (the local rank's under torchrun), else CPU.
    data_info : dict, optional
        Recorded with the model (source file, selection).
    device : torch.device or str, optional
        Deprecated name of ``torch_device``.

    Returns
    -------
    TrainResult
    """
    import torch

    from lorarffi.rffi import ddp

    if device is not None:
        if torch_device is not None:
            raise ConfigError("give torch_device only (device is its deprecated name)")
        warnings.warn("train(device=...) is deprecated: use torch_device=", DeprecationWarning, stacklevel=2)
    t_start = time.perf_counter()
    tc = tc or TrainConfig()
    tc = dataclasses.replace(tc, representation=representation_for(tc.representation, cfg))
    out = pathlib.Path(out_dir)
    if tc.members > 1:
        return _train_ensemble(
            iq, device_ids, cfg, out, tc, resume=resume, progress=progress,
            torch_device=torch_device if device is None else device, data_info=data_info, t_start=t_start,
        )
    rank, world_size = ddp.world()
    torch_device = select_torch_device(torch_device if device is None else device)
    data = prepare_data(iq, device_ids, cfg, tc, data_info)
    augmenter = (
        Augmenter.from_kinds(tc.augment, cfg.fs_hz, bw_hz=cfg.bw_hz, snr_db=tuple(tc.aug_snr_db))
        if tc.augment
        else None
    )
    name, hparams = metric.network_spec(
        tc.model,
        {**shape_hparams(data.features.shape[1:]), **tc.model_hparams, "n_classes": int(data.classes.size)},
        tc.objective,
        tc.embedding_dim,
    )
    from lorarffi.rffi.models import effective_hparams

    hparams = effective_hparams(name, hparams)  # stored: the saved model keeps its architecture
    model = build_network(name, hparams, tc.seed)
    train_model = place_model(model, torch_device, world_size)
    objective, trainable = _objective(model, tc, data.n_labels, world_size, torch_device)
    optimizer = build_optimizer(trainable, tc)
    scheduler = build_scheduler(optimizer, tc)
    state = start_or_resume(
        out, trainable, optimizer, scheduler, tc, data.fingerprint, resume=resume, rank=rank
    )

    n_steps = len(_batches(data, tc, objective, 1, world_size))
    bar = _ProgressBar(n_steps, state.epoch + 1) if progress and rank == 0 else None
    stopped = "epochs"
    t_run = time.perf_counter() - state.elapsed_s
    t_this_run = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            for epoch in range(state.epoch + 1, tc.epochs + 1):
                t_epoch = time.perf_counter()
                torch.manual_seed(tc.seed * 100_003 + epoch)  # dropout
                batches = _batches(data, tc, objective, epoch, world_size)
                shards = _shards(data, batches, augmenter, tc, epoch, rank, world_size)
                if bar is not None:
                    bar.start_epoch(epoch)
                stats = train_one_epoch(
                    train_model,
                    optimizer,
                    shards,
                    torch_device,
                    world_size=world_size,
                    on_step=bar.step if bar is not None else None,
                    objective=objective,
                )
                val_loss, val_acc = (
                    validate(model, data.features[data.val_idx], data.labels[data.val_idx], torch_device)
                    if objective is None
                    else metric.validate_embeddings(
                        model, data.features, data.labels, data.device_train_idx, data.val_idx, torch_device
                    )
                )
                scheduler.step(val_loss)
                rec = {
                    "epoch": epoch,
                    "train_loss": stats.mean_loss(world_size),
                    "train_acc": stats.accuracy,
                    "val_loss": val_loss,
                    "val_acc": val_acc,
                    "lr": optimizer.param_groups[0]["lr"],
                    "time_s": time.perf_counter() - t_epoch,
                }
                improved = record_epoch(state, rec)
                state.elapsed_s = time.perf_counter() - t_run
                if rank == 0:
                    if improved:
                        config = model_dir_config(
                            tc,
                            cfg,
                            data,
                            hparams,
                            rec,
                            data_info,
                            world_size,
                            model_name=name,
                            embedding_dim=int(model.penultimate_dim),
                        )
                        save_model_dir(out, model, config)
                    save_train_state(out, trainable, optimizer, scheduler, state)
                if bar is not None:
                    bar.end_epoch(rec)
                log.info(
                    "epoch %(epoch)d: loss %(train_loss).4f acc %(train_acc).4f val_loss %(val_loss).4f "
                    "val_acc %(val_acc).4f lr %(lr).3g (%(time_s).1f s)",
                    rec,
                )
                reason = stop_reason(state, tc, run_elapsed_s=time.perf_counter() - t_this_run)
                if reason is not None:
                    stopped = reason
                    break
    finally:
        if bar is not None:
            bar.stop()
    if world_size > 1:
        torch.distributed.barrier()
    return TrainResult(
        out,
        state.history,
        state.best_epoch,
        state.best_val_loss,
        state.best_val_acc,
        stopped,
        time.perf_counter() - t_start,
    )


def _train_ensemble(
    iq: npt.ArrayLike,
    device_ids: npt.ArrayLike,
    cfg: LoRaConfig,
    out: pathlib.Path,
    tc: TrainConfig,
    *,
    resume: bool,
    progress: bool,
    torch_device: Any,
    data_info: dict[str, Any] | None,
    t_start: float,
) -> TrainResult:
    """Train ``tc.members`` members one after the other into ``out/members/<i>/`` (each resumes its own
    interrupted run) and join them into the model directory ``out``."""
    from lorarffi.rffi import ensemble

    joined = (out / "config.json").is_file()
    results = []
    for i in range(tc.members):
        where = ensemble.member_dir(out, i)
        # a member that ended in an interrupted run is kept; a joined ensemble asked to resume trains every
        # member further, as a finished model does
        if resume and not joined and (where / _MEMBER_DONE).is_file():
            log.info("ensemble member %d of %d (seed %d) ended earlier in %s", i + 1, tc.members,
                     tc.seed + i, where)
            results.append(_finished_run(where))
            continue
        log.info("ensemble member %d of %d (seed %d) in %s", i + 1, tc.members, tc.seed + i, where)
        (where / _MEMBER_DONE).unlink(missing_ok=True)
        r = train(
            iq,
            device_ids,
            cfg,
            where,
            ensemble.member_config(tc, i),
            resume=resume,
            progress=progress,
            torch_device=torch_device,
            data_info=data_info,
        )
        write_atomic(where / _MEMBER_DONE, json.dumps({"stopped": r.stopped}) + "\n")
        results.append(r)
    ensemble.combine_members([r.model_dir for r in results], out, tc)
    return TrainResult(
        out,
        [{**h, "member": i} for i, r in enumerate(results) for h in r.history],
        None,
        float(np.mean([r.best_val_loss for r in results])),
        float(np.mean([r.best_val_acc for r in results])),
        ",".join(r.stopped for r in results),
        time.perf_counter() - t_start,
        tuple(results),
    )


def _finished_run(out: pathlib.Path) -> TrainResult:
    """The result of an ensemble member that ended in an earlier run, from its saved state."""
    state = TrainState.from_dict(_state_doc(out)["meta"])
    stopped = json.loads((out / _MEMBER_DONE).read_text())["stopped"]
    return TrainResult(
        out, state.history, state.best_epoch, state.best_val_loss, state.best_val_acc, stopped, 0.0
    )


def has_train_state(out: str | os.PathLike) -> bool:
    """True if model directory ``out`` holds the state of a run to resume (its own, or one of its ensemble
    members')."""
    from lorarffi.rffi.ensemble import MEMBERS_DIR

    return _state_file(out).is_file() or any(
        _state_file(m).is_file() for m in (pathlib.Path(out) / MEMBERS_DIR).glob("*")
    )


def _objective(
    model: Any, tc: TrainConfig, n_classes: int, world_size: int, torch_device: Any
) -> tuple[metric.MetricObjective | None, Any]:
    """The metric objective of ``tc`` (None for softmax) and the module training updates and resumes: the
    network, with the objective's own parameters (arcface's prototypes) beside it."""
    import torch

    if not metric.is_metric(tc.objective):
        return None, model
    if world_size > 1:
        raise ConfigError(
            f"objective={tc.objective!r} trains in one process (its batches are mined as a whole): "
            "run it without torchrun"
        )
    objective = metric.build_objective(tc.objective, n_classes, int(model.embedding_dim), tc.seed)
    objective.loss.to(torch_device)
    return objective, torch.nn.ModuleDict({"net": model, "objective": objective.loss})


def _batches(
    data: TrainingData,
    tc: TrainConfig,
    objective: metric.MetricObjective | None,
    epoch: int,
    world_size: int,
) -> list[tuple[int, npt.NDArray[np.int64]]]:
    """The global batches of an epoch: shuffled (:func:`epoch_batches`), or class-balanced for a metric
    objective (:func:`~lorarffi.rffi.metric.balanced_batches`)."""
    if objective is None:
        return epoch_batches(data.train_idx, tc.batch_size, seed=tc.seed, epoch=epoch, world_size=world_size)
    return metric.balanced_batches(data.labels, data.train_idx, tc.batch_size, seed=tc.seed, epoch=epoch)


def _shards(
    data: TrainingData,
    batches: list[tuple[int, npt.NDArray[np.int64]]],
    augmenter: Augmenter | None,
    tc: TrainConfig,
    epoch: int,
    rank: int,
    world_size: int,
) -> Iterator[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], int]]:
    """This process's ``(x, y, n_global)`` of every global batch (features computed for the whole batch, so
    the augmentation draws do not depend on the number of processes)."""
    for step, batch in batches:
        rows = shard(batch.size, rank, world_size)
        x = batch_features(data, batch, augmenter, tc, epoch=epoch, step=step)
        yield x[rows], data.labels[batch][rows], batch.size
