"""``lora-rffi train DATA.h5 --out MODEL_DIR``: train a closed-set classifier (see lorarffi.rffi.train).

Data parallel: ``torchrun --nproc-per-node 2 -m lorarffi.cli train ...`` (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import argparse
import json

from lorarffi.cli.common import add_lora_args, int_range, slice_arg

__all__ = ["HELP", "add_arguments", "run"]

HELP = "train a device classifier on a preamble file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="preamble file (HDF5, ours or the public LoRa_RFFI layout)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--model", default="infocom_cnn", help="registered model name (default infocom_cnn)")
    p.add_argument("--objective", default="classifier", choices=["classifier"], help="training objective")
    p.add_argument(
        "--representation",
        default="channel_independent_spectrogram",
        choices=["channel_independent_spectrogram", "spectrogram", "iq", "fft"],
        help="model input (default channel_independent_spectrogram)",
    )
    p.add_argument(
        "--no-cfo-compensation",
        action="store_true",
        help="keep the CFO in the signal (only to measure what compensation buys)",
    )
    p.add_argument("--optimizer", default="adam", choices=["adam", "rmsprop"])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--lr-patience", type=int, default=10, help="epochs without improvement before LR x lr-factor"
    )
    p.add_argument("--lr-factor", type=float, default=0.2)
    p.add_argument("--patience", type=int, default=30, help="early stopping: epochs without improvement")
    p.add_argument(
        "--max-time-s", type=float, default=None, help="stop after the epoch exceeding this wall time"
    )
    p.add_argument("--devices", type=int_range, default=None, help="device ids, e.g. 1-10 (default all)")
    p.add_argument("--packets", type=slice_arg, default=None, help="packet range per device, e.g. 0:500")
    p.add_argument("--val-split", type=float, default=0.1)
    p.add_argument("--augment", default="", help="comma list of awgn,multipath,cfo (default none)")
    p.add_argument(
        "--aug-snr-db", default="5:40", help="SNR range of the awgn augmentation, dB (default 5:40)"
    )
    p.add_argument("--cfo-margin-hz", type=float, default=None, help="CFO gate margin in Hz (default 1000)")
    p.add_argument(
        "--cfo-weight-std-hz",
        type=float,
        default=None,
        help="drift allowance of the hybrid's CFO weighting in Hz (default 300); 0 turns the weighting off "
        "(the paper's Algorithm 1: plain renormalisation)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_lora_args(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from lorarffi.cli.data import load_selection
    from lorarffi.errors import ConfigError
    from lorarffi.rffi import ddp
    from lorarffi.rffi.hybrid import GateParams
    from lorarffi.rffi.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        lo, hi = (float(v) for v in args.aug_snr_db.split(":"))
    except ValueError:
        raise ConfigError(f"--aug-snr-db={args.aug_snr_db!r} is not a range like 5:40") from None
    gate_kw: dict = {}
    if args.cfo_margin_hz is not None:
        gate_kw["margin_hz"] = args.cfo_margin_hz
    if args.cfo_weight_std_hz == 0:
        gate_kw["cfo_weighting"] = False
    elif args.cfo_weight_std_hz is not None:
        gate_kw["cfo_weight_std_hz"] = args.cfo_weight_std_hz
    gate = GateParams(**gate_kw)
    tc = TrainConfig(
        model=args.model,
        representation={"name": args.representation, "params": {}},
        compensate_cfo=not args.no_cfo_compensation,
        objective=args.objective,
        optimizer=args.optimizer,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_factor=args.lr_factor,
        lr_patience=args.lr_patience,
        early_stop_patience=args.patience,
        val_split=args.val_split,
        augment=tuple(a.strip() for a in args.augment.split(",") if a.strip()),
        aug_snr_db=(lo, hi),
        seed=args.seed,
        max_time_s=args.max_time_s,
        gate=gate,
    )
    ddp.init_from_env()
    iq, ids, cfg, info = load_selection(args)
    result = train(
        iq, ids, cfg, args.out, tc, resume=args.resume, progress=not args.no_progress, data_info=info
    )
    rank, _ = ddp.world()
    if rank == 0:
        print(
            json.dumps(
                {
                    "model_dir": str(result.model_dir),
                    "best_epoch": result.best_epoch,
                    "best_val_loss": result.best_val_loss,
                    "best_val_acc": result.best_val_acc,
                    "epochs_run": len(result.history),
                    "stopped": result.stopped,
                    "elapsed_s": round(result.elapsed_s, 2),
                }
            )
        )
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
