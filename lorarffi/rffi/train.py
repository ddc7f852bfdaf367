"""Train a closed-set classifier on stored preambles and write a model directory.

Recipe: preprocess every packet once (:func:`~lorarffi.rffi.preprocess.preprocess_preambles`: CFO estimate,
compensation, unit RMS), split a random validation fraction, then train with mini-batches, optionally
augmented per batch (multipath, noise, a residual CFO shift applied to the preprocessed packet, which is then
normalised to unit RMS again; multipath and noise commute with the CFO removal up to a negligible phase over a
300 ns delay spread, and the ``cfo`` kind stands for the estimator's error), reducing the learning rate on a
validation-loss plateau and stopping early. The weights with the lowest validation loss are kept in the model
directory, together with the CFO statistics of the training packets (the hybrid gate). After every epoch a
resumable state is written to ``MODEL_DIR/train_state/``.

Determinism: every random draw (split, model initialisation, batch order, augmentation, dropout) derives from
``seed`` and the epoch/batch number, so a run resumed after an interruption ends with the same weights as
an uninterrupted one. Data parallel: under ``torch.distributed`` each process takes a slice of every global
batch; batch norm uses global-batch statistics and the loss is scaled so the averaged gradient equals the
single-process gradient of the global batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError, ModelError
from lorarffi.rffi.augment import Augmenter
from lorarffi.rffi.checkpoint import ModelDirConfig, fingerprint_arrays, save_model_dir
from lorarffi.rffi.features import compute_features, shape_hparams
from lorarffi.rffi.hybrid import CfoGate, GateParams
from lorarffi.rffi.preprocess import preprocess_preambles, rms_normalize

__all__ = ["TrainConfig", "TrainResult", "train", "DEFAULT_REPRESENTATION"]

log = logging.getLogger(__name__)

DEFAULT_REPRESENTATION: dict[str, Any] = {"name": "channel_independent_spectrogram", "params": {}}
STATE_DIR = "train_state"


@dataclass(frozen=True)
class TrainConfig:
    """How to train (everything but the data).

    Parameters
    ----------
    model : str
        Registered model name.
    model_hparams : dict
        Extra architecture hyper-parameters (``n_classes`` and the input shape are filled in).
    representation : dict
        ``{"name": ..., "params": {...}}`` of :class:`lorarffi.dsp.representation.RepresentationConfig`.
    compensate_cfo : bool
        Remove each packet's CFO before the representation (False only to measure what it buys).
    objective : {"classifier"}
        Softmax classification (cross-entropy).
    optimizer : {"adam", "rmsprop"}
        Optimiser.
    lr : float
        Initial learning rate.
    epochs : int
        Most epochs.
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
    aug_snr_db : tuple of float
        SNR range of the AWGN augmentation, dB.
    seed : int
        Seed of every random draw.
    max_time_s : float or None
        Stop after the epoch during which this much wall time has passed.
    weight_decay : float
        Decoupled (AdamW) or L2 (RMSprop) weight decay.
    gate : GateParams
        Parameters of the CFO gate stored with the model.
    """

    model: str = "infocom_cnn"
    model_hparams: dict[str, Any] = field(default_factory=dict)
    representation: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_REPRESENTATION))
    compensate_cfo: bool = True
    objective: Literal["classifier"] = "classifier"
    optimizer: Literal["adam", "rmsprop"] = "adam"
    lr: float = 1e-3
    epochs: int = 30
    batch_size: int = 32
    lr_factor: float = 0.2
    lr_patience: int = 10
    early_stop_patience: int = 30
    val_split: float = 0.1
    augment: tuple[str, ...] = ()
    aug_snr_db: tuple[float, float] = (5.0, 40.0)
    seed: int = 0
    max_time_s: float | None = None
    weight_decay: float = 0.0
    gate: GateParams = field(default_factory=GateParams)

    def __post_init__(self) -> None:
        if self.objective != "classifier":
            raise ConfigError(f"objective={self.objective!r} is not valid here: use 'classifier'")
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
    best_epoch : int
        Epoch (1-based) of the kept weights.
    best_val_loss, best_val_acc : float
        Validation loss and accuracy of the kept weights.
    stopped : str
        ``"epochs"``, ``"early_stop"`` or ``"time_limit"``.
    elapsed_s : float
        Wall time of this call, s.
    """

    model_dir: pathlib.Path
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    best_val_acc: float
    stopped: str
    elapsed_s: float


def _split(labels: npt.NDArray[np.int64], val_split: float, rng: np.random.Generator):
    """Stratified random split: about ``val_split`` of every class (at least one) goes to validation."""
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = max(1, int(round(val_split * idx.size))) if idx.size > 1 else 0
        val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(labels.size), val_idx)
    return train_idx, val_idx


def _save_train_state(out: pathlib.Path, model, optimizer, scheduler, meta: dict[str, Any]) -> None:
    """Resumable state: weights + optimiser tensors in safetensors, the rest in JSON (nothing pickled)."""
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
    doc = {"meta": meta, "param_groups": opt["param_groups"], "opt_plain": opt_plain, "scheduler": sched}
    (d / "state.json.tmp").write_text(json.dumps(doc))
    os.replace(d / "state.json.tmp", d / "state.json")


# Settings a resumed run may change: how long it goes on.
_RESUMABLE_CHANGES = frozenset({"epochs", "max_time_s"})


def _changed_settings(saved: dict[str, Any] | None, tc: TrainConfig) -> list[str]:
    """``name: saved -> now`` for every setting of ``tc`` that differs from the interrupted run's."""
    if saved is None:  # state written before settings were saved: nothing to compare
        return []
    now = json.loads(json.dumps(tc.to_dict()))  # the same plain types the saved copy went through
    return [
        f"{k}: {saved.get(k)!r} -> {v!r}"
        for k, v in now.items()
        if k not in _RESUMABLE_CHANGES and saved.get(k) != v
    ]


def _load_train_state(out: pathlib.Path, model, optimizer, scheduler) -> dict[str, Any]:
    from safetensors.torch import load_file

    d = out / STATE_DIR
    if not (d / "state.json").is_file():
        raise ModelError(f"{out}: nothing to resume (no {STATE_DIR}/state.json)")
    doc = json.loads((d / "state.json").read_text())
    tensors = load_file(str(d / "state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, st in doc["opt_plain"].items():
        state.setdefault(int(pid), {}).update(st)
    optimizer.load_state_dict({"state": state, "param_groups": doc["param_groups"]})
    scheduler.load_state_dict({**scheduler.state_dict(), **doc["scheduler"]})
    return doc["meta"]


def _augmented_features(
    iq: npt.NDArray[np.complex64], augmenter: Augmenter, rng: np.random.Generator, tc: TrainConfig
) -> npt.NDArray[np.float32]:
    """Features of augmented preprocessed packets (re-normalised to unit RMS, as the detector would)."""
    return compute_features(rms_normalize(augmenter(iq, rng)), tc.representation)


def _evaluate(model, feats: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], device, batch: int = 256):
    import torch
    from torch.nn import functional as F

    from lorarffi.rffi.models import channels_last_batch

    model.eval()
    loss = 0.0
    correct = 0
    with torch.no_grad():
        for s in range(0, len(labels), batch):
            x = channels_last_batch(torch.from_numpy(feats[s : s + batch]).to(device))
            y = torch.from_numpy(labels[s : s + batch]).to(device)
            z = model(x)
            loss += float(F.cross_entropy(z, y, reduction="sum"))
            correct += int((z.argmax(1) == y).sum())
    n = max(len(labels), 1)
    return loss / n, correct / n


def train(
    iq: npt.ArrayLike,
    device_ids: npt.ArrayLike,
    cfg: LoRaConfig,
    out_dir: str | os.PathLike,
    tc: TrainConfig | None = None,
    *,
    resume: bool = False,
    progress: bool = False,
    device=None,
    data_info: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a classifier on stored preambles and write the model directory ``out_dir``.

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
        Training settings (defaults: INFOCOM CNN on the channel-independent spectrogram, Adam).
    resume : bool
        Continue from ``out_dir/train_state`` if present (same data and settings).
    progress : bool
        Show a progress bar with loss/accuracy/lr on stderr.
    device : torch.device or str, optional
        Default CUDA when available (the local rank's under torchrun), else CPU.
    data_info : dict, optional
        Recorded with the model (source file, selection).

    Returns
    -------
    TrainResult
    """
    import torch
    from torch.nn import functional as F

    from lorarffi.rffi import ddp
    from lorarffi.rffi.models import build_model, channels_last_batch

    t_start = time.perf_counter()
    tc = tc or TrainConfig()
    out = pathlib.Path(out_dir)
    rank, world_size = ddp.world()
    if device is None:
        device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
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

    rng_split = np.random.default_rng([tc.seed, 0xC0FFEE])
    train_idx, val_idx = _split(labels, tc.val_split, rng_split)

    # Preprocess once: CFO statistics for the gate (all training packets) and the un-augmented features.
    pre = preprocess_preambles(x_raw, cfg, compensate=tc.compensate_cfo)
    gate = CfoGate.fit(pre.cfo_hz[train_idx], labels[train_idx], classes, tc.gate)
    feats = compute_features(pre.iq, tc.representation)
    pre_iq = pre.iq if tc.augment else None
    del pre
    augmenter = (
        Augmenter.from_kinds(tc.augment, cfg.fs_hz, bw_hz=cfg.bw_hz, snr_db=tuple(tc.aug_snr_db))
        if tc.augment
        else None
    )

    hparams = {**shape_hparams(feats.shape[1:]), **tc.model_hparams, "n_classes": int(classes.size)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tc.seed)
        model = build_model(tc.model, **hparams)
    # Channels-last (NHWC) convolution weights and batches: the same numbers, but oneDNN's backward pass is
    # far faster in that layout (measured on 2 cores, batch 32: INFOCOM IQ CNN 2.4x, TIFS ResNet 1.2x).
    model.to(device, memory_format=torch.channels_last)
    if world_size > 1:
        ddp.convert_batchnorm(model)
        model.to(device, memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    if tc.optimizer == "adam":
        optimizer = (
            torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
            if tc.weight_decay
            else torch.optim.Adam(params, lr=tc.lr)
        )
    else:
        optimizer = torch.optim.RMSprop(params, lr=tc.lr, alpha=0.9, eps=1e-7, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=tc.lr_factor, patience=tc.lr_patience
    )
    train_model = model
    if world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if getattr(device, "type", str(device)) == "cuda" else None
        )

    def model_config(training_extra: dict[str, Any]) -> ModelDirConfig:
        return ModelDirConfig(
            model_name=tc.model,
            model_hparams=hparams,
            representation=dict(tc.representation),
            lora=cfg,
            device_ids=tuple(int(c) for c in classes),
            cfo_compensation=tc.compensate_cfo,
            hybrid=gate.to_dict(),
            training={
                **tc.to_dict(),
                **training_extra,
                "data": data_info or {},
                "n_train": int(train_idx.size),
                "n_val": int(val_idx.size),
                "world_size": world_size,
            },
            data_fingerprint=fingerprint,
        )

    meta: dict[str, Any] = {
        "epoch": 0,
        "best_val_loss": math.inf,
        "best_val_acc": 0.0,
        "best_epoch": 0,
        "bad_epochs": 0,
        "history": [],
        "fingerprint": fingerprint,
        "elapsed_s": 0.0,
        "train_config": tc.to_dict(),
    }
    if resume and (out / STATE_DIR / "state.json").is_file():
        meta = _load_train_state(out, model, optimizer, scheduler)
        if meta.get("fingerprint") != fingerprint:
            raise ModelError(f"{out}: cannot resume: the training data differ from the interrupted run's")
        changed = _changed_settings(meta.get("train_config"), tc)
        if changed:
            raise ModelError(
                f"{out}: cannot resume: settings differ from the interrupted run's ({'; '.join(changed)}); "
                "repeat its command line (only --epochs and the time cap may change)"
            )
        meta["train_config"] = tc.to_dict()
        log.info("resuming %s after epoch %d", out, meta["epoch"])
    elif not resume and (out / STATE_DIR).exists() and rank == 0:
        for f in (out / STATE_DIR).iterdir():
            f.unlink()

    n_train = train_idx.size
    steps = max(1, n_train // tc.batch_size) if n_train >= tc.batch_size else 1
    bar = None
    if progress and rank == 0:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        bar.start()
        task = bar.add_task("train", total=steps, epoch=meta["epoch"] + 1, info="")
    stopped = "epochs"
    t_run = time.perf_counter() - meta["elapsed_s"]
    try:
        with torch.random.fork_rng(devices=[]):
            for epoch in range(meta["epoch"] + 1, tc.epochs + 1):
                t_epoch = time.perf_counter()
                torch.manual_seed(tc.seed * 100_003 + epoch)
                rng = np.random.default_rng([tc.seed, epoch])
                order = train_idx[rng.permutation(n_train)]
                train_model.train()
                tot_loss = 0.0
                tot_correct = 0
                tot_n = 0
                if bar is not None:
                    bar.reset(task, total=steps, epoch=epoch, info="")
                for step in range(steps):
                    batch = order[step * tc.batch_size : (step + 1) * tc.batch_size]
                    if batch.size < world_size:
                        continue
                    if augmenter is not None:
                        brng = np.random.default_rng([tc.seed, epoch, step])
                        xb = _augmented_features(pre_iq[batch], augmenter, brng, tc)
                    else:
                        xb = feats[batch]
                    yb = labels[batch]
                    shard = slice(rank * batch.size // world_size, (rank + 1) * batch.size // world_size)
                    x = channels_last_batch(torch.from_numpy(np.ascontiguousarray(xb[shard])).to(device))
                    y = torch.from_numpy(yb[shard]).to(device)
                    optimizer.zero_grad(set_to_none=True)
                    z = train_model(x)
                    loss = F.cross_entropy(z, y, reduction="sum") * (world_size / batch.size)
                    loss.backward()
                    optimizer.step()
                    tot_loss += loss.item() * batch.size / world_size
                    tot_correct += int((z.argmax(1) == y).sum())
                    tot_n += int(y.numel())
                    if bar is not None:
                        bar.update(task, advance=1, info=f"loss {tot_loss / max(tot_n * world_size, 1):.4f}")
                val_loss, val_acc = _evaluate(model, feats[val_idx], labels[val_idx], device)
                scheduler.step(val_loss)
                lr = optimizer.param_groups[0]["lr"]
                rec = {
                    "epoch": epoch,
                    "train_loss": tot_loss / max(tot_n * world_size, 1),
                    "train_acc": tot_correct / max(tot_n, 1),
                    "val_loss": val_loss,
                    "val_acc": val_acc,
                    "lr": lr,
                    "time_s": time.perf_counter() - t_epoch,
                }
                meta["history"].append(rec)
                meta["epoch"] = epoch
                improved = val_loss < meta["best_val_loss"]
                if improved:
                    meta.update(best_val_loss=val_loss, best_val_acc=val_acc, best_epoch=epoch, bad_epochs=0)
                else:
                    meta["bad_epochs"] += 1
                meta["elapsed_s"] = time.perf_counter() - t_run
                if rank == 0:
                    if improved:
                        save_model_dir(
                            out,
                            model,
                            model_config(
                                {"best_epoch": epoch, "best_val_loss": val_loss, "best_val_acc": val_acc}
                            ),
                        )
                    _save_train_state(out, model, optimizer, scheduler, meta)
                if bar is not None:
                    bar.update(
                        task,
                        info=f"loss {rec['train_loss']:.4f} acc {rec['train_acc']:.3f} "
                        f"val {val_loss:.4f}/{val_acc:.3f} lr {lr:.2g}",
                    )
                log.info(
                    "epoch %d: loss %.4f acc %.4f val_loss %.4f val_acc %.4f lr %.3g (%.1f s)",
                    epoch,
                    rec["train_loss"],
                    rec["train_acc"],
                    val_loss,
                    val_acc,
                    lr,
                    rec["time_s"],
                )
                if meta["bad_epochs"] >= tc.early_stop_patience:
                    stopped = "early_stop"
                    break
                if tc.max_time_s is not None and meta["elapsed_s"] >= tc.max_time_s:
                    stopped = "time_limit"
                    break
    finally:
        if bar is not None:
            bar.stop()
    if world_size > 1:
        torch.distributed.barrier()
    return TrainResult(
        out,
        meta["history"],
        meta["best_epoch"],
        meta["best_val_loss"],
        meta["best_val_acc"],
        stopped,
        time.perf_counter() - t_start,
    )
