"""``lora-rffi evaluate MODEL_DIR DATA.h5``: accuracy of the CNN alone and of the CFO-gated hybrid: the
decisions ``lora-rffi classify`` makes (:func:`lorarffi.rffi.classify.classify_preambles`), scored against
the file's labels."""

from __future__ import annotations

import argparse
import json

from lorarffi.cli.common import add_lora_args, add_receiver_offset_arg, int_range, slice_arg
from lorarffi.cli.progress import add_progress_arg

__all__ = ["HELP", "add_arguments", "run"]

HELP = "score a model on a labelled preamble file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="model directory written by `lora-rffi train`")
    p.add_argument("data", help="preamble file (HDF5, ours or the public layout)")
    p.add_argument("--devices", type=int_range, default=None, help="device ids, e.g. 1-10 (default all)")
    p.add_argument("--packets", type=slice_arg, default=None, help="packet range per device, e.g. 500:1000")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--plots", default=None, metavar="DIR", help="write confusion-matrix and CFO plots here")
    p.add_argument("--no-tracking", action="store_true", help="evaluate with drift tracking off")
    p.add_argument(
        "--save-tracking", action="store_true", help="keep the drift-tracked gate state in MODEL_DIR"
    )
    p.add_argument("--batch-size", type=int, default=64, help="packets per classification call (default 64)")
    p.add_argument("--device", default=None, help="torch device (default CUDA if available, else CPU)")
    add_receiver_offset_arg(p)
    add_lora_args(p, default_from="the file's, else the model's")
    add_progress_arg(p)


def run(args: argparse.Namespace) -> int:
    from lorarffi.cli.classify import load_classifier_for
    from lorarffi.cli.data import check_model_parameters, load_selection
    from lorarffi.cli.progress import progress_bar, progress_enabled
    from lorarffi.rffi.evaluate import evaluate, write_plots

    clf = load_classifier_for(args)  # as `classify` loads it: --no-tracking, --receiver-offset-ppm applied
    sel = load_selection(args, fallback=clf.lora)  # a file stating no LoRa parameters is read at the model's
    check_model_parameters(sel, clf.lora, args, args.model_dir)
    ids = sel.device_ids
    with progress_bar("evaluate", ids.size, enabled=progress_enabled(args)) as advance:
        result, decision = evaluate(
            clf, sel.iq, ids, batch_size=args.batch_size, source=args.data, progress=advance
        )
    if args.save_tracking:
        clf.save_state()
    if args.plots:
        write_plots(args.plots, result, decision, ids, clf)
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    print(
        f"packets {result.n_packets}  accuracy CNN {result.accuracy_cnn:.4f}  "
        f"hybrid {result.accuracy_hybrid:.4f}"
        f"  rejected {result.rejected}"
        + (f"  not preambles {result.n_not_preamble}" if result.n_not_preamble else "")
        + (f"  receiver offset {result.receiver_offset_hz:+.0f} Hz" if result.receiver_offset_hz else "")
    )
    print(
        f"{'device':>6} {'n':>6} {'prec_cnn':>9} {'rec_cnn':>8} {'prec_hyb':>9} {'rec_hyb':>8} "
        f"{'rejected':>8}"
    )

    def fmt(v):
        return "-" if v is None else f"{v:.4f}"

    for d in result.per_device:
        print(
            f"{d['device']:>6} {d['n']:>6} {fmt(d['precision_cnn']):>9} {fmt(d['recall_cnn']):>8} "
            f"{fmt(d['precision_hybrid']):>9} {fmt(d['recall_hybrid']):>8} {d['rejected']:>8}"
        )
    if result.unknown_devices:
        print(
            f"devices not known to the model: {result.unknown_devices} "
            f"({result.n_unknown_device_packets} packets, "
            f"{result.unknown_device_rejected} rejected by the CFO gate)"
        )
    return 0
