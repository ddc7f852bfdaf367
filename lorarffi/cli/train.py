"""``lora-rffi train DATA.h5 -o MODEL_DIR``: train a closed-set classifier, or with ``--objective`` an
embedding extractor (see lorarffi.rffi.train).

The flags' defaults are the default model's recipe, :data:`lorarffi.rffi.recipe.RECIPE`. The model is
written to a hidden sibling ``.MODEL_DIR.partial`` and renamed to MODEL_DIR when training ends, so an
interrupted run leaves no model that looks finished; ``--resume`` continues it (or continues a finished
model with more epochs or time). An existing MODEL_DIR is replaced only with ``--overwrite``.

Data parallel: ``torchrun --nproc-per-node 2 -m lorarffi.cli train ...`` (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from lorarffi.cli.common import (
    add_json_arg,
    add_lora_args,
    check_output,
    int_range,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    print_json,
    slice_arg,
    snr_range_db,
)
from lorarffi.errors import ConfigError
from lorarffi.rffi.recipe import (
    EXTRACTOR_AUG_SNR_DB,
    EXTRACTOR_EPOCHS,
    EXTRACTOR_MAX_TIME_S,
    EXTRACTOR_MEMBERS,
    EXTRACTOR_OBJECTIVE,
    RECIPE,
    recipe_representation,
)

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "add_arguments", "train_config", "run"]

_TOP_DB = dict(RECIPE.representation_params)["top_db"]  # the recipe's spectrogram floor, dB below the peak
HELP = "train a device classifier on a preamble file"
DESCRIPTION = (
    "Train a closed-set device classifier and its CFO gate on a preamble file. Every default is the recipe "
    "of the default model the closed_set benchmark reports (lorarffi.rffi.recipe.RECIPE, docs/models.md): "
    f"{RECIPE.model} on the {RECIPE.representation.replace('_', ' ')} "
    f"(floored {_TOP_DB:g} dB below each packet's peak), "
    f"{'+'.join(RECIPE.augment) or 'no'} augmentation, {RECIPE.optimizer.capitalize()} {RECIPE.lr:g}, "
    f"up to {RECIPE.epochs} epochs"
    + (f" within {RECIPE.max_time_s:g} s" if RECIPE.max_time_s else "")
    + ". With no options `lora-rffi train DATA.h5 --out M` trains that model. The model directory appears "
    "when training ends; an interrupted run is kept aside for --resume; an existing model is replaced only "
    "with --overwrite. Prints one JSON summary object (best epoch, validation loss and accuracy, why it "
    "stopped)."
)
EPILOG = (
    "example: lora-rffi train fleet_day1.h5 -o runs/model\n"
    "         lora-rffi train fleet_day1.h5 -o runs/model --resume --max-time-s 600"
)


# The model inputs --representation offers: dsp.representation's registry (a test keeps them equal; importing
# it here would slow down every `lora-rffi --help`).
REPRESENTATIONS = (
    "folded_channel_independent_spectrogram",
    "coherent_channel_independent_spectrogram",
    "channel_independent_spectrogram",
    "spectrogram",
    "iq",
    "fft",
)

# The recipe's numbers: flag, RECIPE field, type, help.
_RECIPE_NUMBERS = (
    ("--batch-size", "batch_size", positive_int, "global mini-batch size"),
    ("--lr", "lr", positive_float, "initial learning rate"),
    ("--lr-patience", "lr_patience", positive_int, "epochs without improvement before LR x lr-factor"),
    ("--lr-factor", "lr_factor", positive_float, "learning-rate factor"),
    ("--patience", "early_stop_patience", positive_int, "early stopping: epochs without improvement"),
    ("--val-split", "val_split", float, "fraction of packets held out for validation"),
    ("--seed", "seed", int, "seed of every random draw"),
)


def _seconds(cap: float | None) -> str:
    return "none" if cap is None else f"{cap:g}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    r = RECIPE
    p.add_argument("data", help="preamble file (HDF5, ours or the public LoRa_RFFI layout)")
    p.add_argument("-o", "--out", required=True, help="model directory to write")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the model directory --out if it holds a model"
    )
    p.add_argument("--model", default=r.model, help="registered model name (default %(default)s)")
    p.add_argument(
        "--objective",
        default=r.objective,
        help="softmax (a classifier), or an embedding extractor trained with triplet (semi-hard mining), "
        "supcon (supervised contrastive) or arcface (angular margin) (default %(default)s: the default "
        f"model; for an enrollment extractor {EXTRACTOR_OBJECTIVE}, which the open-set benchmark measures "
        "best)",
    )
    p.add_argument(
        "--embedding-dim",
        type=int,
        default=None,
        help="embedding size of a metric objective (default 512 on tifs_resnet, else 128)",
    )
    p.add_argument(
        "--representation",
        default=r.representation,
        choices=REPRESENTATIONS,
        help="model input (default %(default)s, floored "
        f"{_TOP_DB:g} dB below each packet's peak; for the embedding objectives also at the level of a flat "
        "spectrum)",
    )
    p.add_argument(
        "--no-cfo-compensation",
        action="store_true",
        help="keep the CFO in the signal (only to measure what compensation buys)",
    )
    p.add_argument(
        "--optimizer",
        default=r.optimizer,
        choices=("adam", "rmsprop"),
        help="optimiser (default %(default)s)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"most epochs (default {r.epochs} for softmax, {EXTRACTOR_EPOCHS} for the embedding objectives)",
    )
    for flag, name, kind, text in _RECIPE_NUMBERS:
        p.add_argument(flag, type=kind, default=getattr(r, name), help=f"{text} (default %(default)s)")
    p.add_argument(
        "--max-time-s",
        type=nonnegative_float,
        default=None,
        help="stop after the epoch exceeding this wall time of this run, s (a --resume run gets the whole "
        f"budget again); 0 = no cap (default {_seconds(r.max_time_s)} for softmax, "
        f"{_seconds(EXTRACTOR_MAX_TIME_S)} for the embedding objectives)",
    )
    p.add_argument("--devices", type=int_range, default=None, help="device ids, e.g. 1-10 (default all)")
    p.add_argument(
        "--packets", type=slice_arg, default=None, help="packet range per device, e.g. 0:500 (default all)"
    )
    p.add_argument(
        "--augment",
        default=",".join(r.augment),
        help="comma list of awgn,multipath,cfo,receiver, or '' for none "
        f"(default {','.join(r.augment) or 'none'})",
    )
    snr = f"{r.aug_snr_db[0]:g}:{r.aug_snr_db[1]:g}"
    ext_snr = f"{EXTRACTOR_AUG_SNR_DB[0]:g}:{EXTRACTOR_AUG_SNR_DB[1]:g}"
    p.add_argument(
        "--aug-snr-db",
        type=snr_range_db,
        default=None,
        help=f"SNR range of the awgn augmentation, dB (default {snr} for softmax, {ext_snr} for the "
        "embedding objectives)",
    )
    p.add_argument(
        "--pseudo-devices",
        type=nonnegative_int,
        default=0,
        help="pseudo-devices per training device of an embedding objective: copies of its packets through "
        "one fixed transmitter transform each (IQ imbalance, carrier leakage, filter ripple), trained as "
        "devices of their own (default %(default)s: none; not for softmax)",
    )
    p.add_argument(
        "--members",
        type=positive_int,
        default=None,
        help="training runs joined into one embedding extractor, member i with seed --seed + i, each under "
        f"the whole budget (default {EXTRACTOR_MEMBERS} for the embedding objectives, 1 for softmax, which "
        "takes no other)",
    )
    p.add_argument(
        "--cfo-margin-ppm",
        type=float,
        default=None,
        help="CFO gate margin in ppm of the carrier (default 2.5: a device stays through a 2 ppm step)",
    )
    p.add_argument(
        "--cfo-margin-hz", type=float, default=None, help="the CFO gate margin in Hz instead of ppm"
    )
    p.add_argument(
        "--cfo-weight-std-ppm",
        type=float,
        default=None,
        help="drift allowance of the hybrid's CFO weighting in ppm of the carrier (default 0.1)",
    )
    p.add_argument(
        "--cfo-weight-std-hz",
        type=float,
        default=None,
        help="the drift allowance in Hz instead of ppm; 0 turns the weighting off "
        "(the paper's Algorithm 1: plain renormalisation)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run of --out (same data and settings; --epochs and --max-time-s may "
        "change), or train a finished model further",
    )
    p.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_json_arg(p, "the summary as one JSON object (always: the summary is JSON)")
    add_lora_args(p)


def train_config(args: argparse.Namespace):  # -> lorarffi.rffi.train.TrainConfig
    """The :class:`~lorarffi.rffi.train.TrainConfig` the flags ask for (with no flags: ``TrainConfig()``)."""
    from lorarffi.rffi.hybrid import GateParams
    from lorarffi.rffi.metric import is_metric
    from lorarffi.rffi.train import BY_RECIPE, TrainConfig

    gate_kw: dict = {}
    if args.cfo_margin_hz is not None:
        gate_kw["margin_hz"] = args.cfo_margin_hz
    if args.cfo_margin_ppm is not None:
        gate_kw["margin_ppm"] = args.cfo_margin_ppm
    if args.cfo_weight_std_hz == 0 or args.cfo_weight_std_ppm == 0:
        gate_kw["cfo_weighting"] = False
    else:
        if args.cfo_weight_std_hz is not None:
            gate_kw["cfo_weight_std_hz"] = args.cfo_weight_std_hz
        if args.cfo_weight_std_ppm is not None:
            gate_kw["cfo_weight_std_ppm"] = args.cfo_weight_std_ppm
    gate = GateParams(**gate_kw)
    return TrainConfig(
        model=args.model,
        representation=recipe_representation(args.representation, metric=is_metric(args.objective)),
        compensate_cfo=RECIPE.compensate_cfo and not args.no_cfo_compensation,
        objective=args.objective,
        embedding_dim=args.embedding_dim,
        optimizer=args.optimizer,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_factor=args.lr_factor,
        lr_patience=args.lr_patience,
        early_stop_patience=args.patience,
        val_split=args.val_split,
        augment=tuple(a.strip() for a in args.augment.split(",") if a.strip()),
        aug_snr_db=args.aug_snr_db,
        pseudo_devices=args.pseudo_devices,
        members=args.members,
        seed=args.seed,
        max_time_s=BY_RECIPE if args.max_time_s is None else (args.max_time_s or None),
        gate=gate,
    )


def _work_dir(args: argparse.Namespace) -> tuple[Path, Path]:
    """(the model directory asked for, the directory to train in): a hidden ``.NAME.partial`` sibling renamed
    onto it at the end, or the model directory itself when ``--resume`` continues a finished model.

    Raises
    ------
    ConfigError
        ``--out`` is a file, holds a model and neither ``--overwrite`` nor ``--resume`` is given, or
        ``--resume`` finds no run to continue.
    """
    from lorarffi.rffi.train import has_train_state

    out = Path(args.out)
    partial = out.with_name(f".{out.name}.partial")
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the model in --out, --overwrite replaces it: give one")
    if args.resume:
        for work in (partial, out):
            if has_train_state(work):
                return out, work
        raise ConfigError(
            f"{out}: nothing to resume (no interrupted or finished run of it here): drop --resume to start "
            "a new run"
        )
    check_output(out, overwrite=args.overwrite, flag="-o/--out", directory=True)
    if partial.exists():
        shutil.rmtree(partial)
    return out, partial


def _interrupted(out: Path, work: Path) -> str:
    """What an interrupted run left, for the Ctrl-C message (an empty partial directory is removed)."""
    from lorarffi.rffi.train import has_train_state

    if has_train_state(work):
        return (
            f"training of {out} stopped; its last finished epoch is kept in {work}: run the same command "
            "with --resume to continue"
        )
    if work != out and work.exists():
        shutil.rmtree(work)
    return f"training of {out} stopped before its first epoch ended: nothing to resume"


def _finish(out: Path, work: Path) -> None:
    """Put the finished model of ``work`` at ``out`` (replacing what --overwrite allowed to replace)."""
    import os

    if work == out:
        return
    if out.is_dir():
        shutil.rmtree(out)
    os.replace(work, out)


def _summary(result, out: Path) -> dict:
    """A training result in the summary, with an ensemble's members (each with its model directory as it is
    once training ends)."""
    from lorarffi.rffi.ensemble import member_dir

    return {
        "model_dir": str(out),
        "best_epoch": float("nan") if result.best_epoch is None else result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "best_val_acc": result.best_val_acc,
        "epochs_run": len(result.history),
        "stopped": result.stopped,
        "elapsed_s": round(result.elapsed_s, 2),
        **(
            {"members": [_summary(m, member_dir(out, i)) for i, m in enumerate(result.members)]}
            if result.members
            else {}
        ),
    }


def run(args: argparse.Namespace) -> int:
    import torch

    from lorarffi.cli.data import load_selection
    from lorarffi.rffi import ddp
    from lorarffi.rffi.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    tc = train_config(args)
    out, work = _work_dir(args)
    ddp.init_from_env()
    sel = load_selection(args)
    try:
        result = train(
            sel.iq,
            sel.device_ids,
            sel.cfg,
            work,
            tc,
            resume=args.resume,
            progress=not args.no_progress,
            data_info=sel.info,
        )
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(out, work)) from None
    rank, _ = ddp.world()
    if rank == 0:
        _finish(out, work)
        print_json(
            {"type": "summary", **_summary(result, out)},
            reasons={
                "best_val_loss": "no epoch improved on the validation loss",
                "best_epoch": "an ensemble: each member has its own (members)",
            },
        )
    ddp.leave()
    return 0
