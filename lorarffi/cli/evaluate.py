"""``lora-rffi evaluate MODEL_DIR DATA.h5``: accuracy of the CNN alone and of the CFO-gated hybrid: the
decisions ``lora-rffi classify`` makes (:func:`lorarffi.rffi.classify.classify_preambles`), scored against
the file's labels."""

from __future__ import annotations

import argparse
import logging
import math

from lorarffi.cli.classify import add_decision_file_arg
from lorarffi.cli.common import (
    add_json_arg,
    add_lora_args,
    add_plots_arg,
    add_receiver_offset_arg,
    add_torch_device_arg,
    add_whole_packets_arg,
    check_output,
    describe_ids,
    int_range,
    packet_symbols_of,
    positive_int,
    print_json,
    slice_arg,
)
from lorarffi.cli.inputs import add_recording_args
from lorarffi.cli.progress import add_progress_arg

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "add_arguments", "run"]

HELP = "score a model on a labelled preamble file"
DESCRIPTION = (
    "Score a trained model on a preamble file whose packets are labelled with their device: the accuracy of "
    "the neural network alone and of the hybrid decision that also checks each packet's carrier frequency "
    "offset (CFO) against the window learned for the device, per-device precision and recall, and how many "
    "packets the CFO gate rejected. Packets of devices the model does not know are counted apart. Prints a "
    "table, or one JSON object with --json; --plots writes the confusion matrices and the CFO per device."
)
EPILOG = "example: lora-rffi evaluate runs/model fleet_day2.h5 --json --plots runs/plots"

_NO_KNOWN = "no packet of a device the model knows: nothing to score"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="model directory written by `lora-rffi train`")
    p.add_argument(
        "data",
        help="preamble file (HDF5, ours or the public layout), or a recording whose annotations name each "
        "packet's device (SigMF as `lora-rffi simulate --stream` writes: detection runs first)",
    )
    p.add_argument("--devices", type=int_range, default=None, help="device ids, e.g. 1-10 (default all)")
    p.add_argument(
        "--packets", type=slice_arg, default=None, help="packet range per device, e.g. 500:1000 (default all)"
    )
    add_json_arg(p, "one JSON object")
    add_plots_arg(p, "the confusion matrices and the CFO per device")
    p.add_argument("--no-tracking", action="store_true", help="evaluate with drift tracking off")
    p.add_argument(
        "--save-tracking", action="store_true", help="keep the drift-tracked gate state in MODEL_DIR"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=64, help="packets per classification call (default 64)"
    )
    add_torch_device_arg(p)
    add_receiver_offset_arg(p)
    add_lora_args(p, default_from="the file's, else the model's")
    add_progress_arg(p)
    add_decision_file_arg(p)
    add_recording_args(p)
    add_whole_packets_arg(p)


def run(args: argparse.Namespace) -> int:
    if args.plots:
        check_output(args.plots, overwrite=True, flag="--plots", directory=True)
    import numpy as np

    from lorarffi.cli.classify import check_decision_file, load_classifier_for, write_decision_file
    from lorarffi.cli.data import check_model_parameters, load_selection
    from lorarffi.cli.inputs import is_dataset, read_input
    from lorarffi.cli.progress import progress_bar, progress_enabled
    from lorarffi.errors import ConfigError
    from lorarffi.rffi.classify import PacketDecisions
    from lorarffi.rffi.evaluate import evaluate, write_plots
    from lorarffi.rffi.preprocess import Preprocessed

    check_decision_file(args.out)
    clf = load_classifier_for(args)  # as `classify` loads it: --no-tracking, --receiver-offset-ppm applied
    if is_dataset(args.data):
        sel = load_selection(args, fallback=clf.lora)  # a file stating no LoRa parameters: the model's
        check_model_parameters(sel, clf.lora, args, args.model_dir)
        rows = clf.preprocess(sel.iq, source=args.data, packet_symbols=packet_symbols_of(args))
        ids, start, snr = sel.device_ids, sel.meta.get("start"), sel.meta.get("snr_db")
    else:  # a recording: classify's packets, scored against its annotations' labels
        packets = read_input(argparse.Namespace(**{**vars(args), "input": args.data}), clf)
        if packets.labels is None:
            raise ConfigError(
                f"{args.data}: no annotation says who sent its packets, so there is nothing to score: "
                "`lora-rffi classify` decides them without labels"
            )
        ids, start, snr = packets.labels, packets.start_sample, packets.snr_db
        rows = Preprocessed(packets.preambles, packets.cfo_hz, np.isfinite(packets.cfo_hz))
    with progress_bar("evaluate", ids.size, enabled=progress_enabled(args)) as advance:
        result, decision = evaluate(
            clf, rows, ids, batch_size=args.batch_size, source=args.data, progress=advance
        )
    if args.save_tracking:
        clf.save_state()
    if args.out is not None:  # the file `classify` writes, with the labels it was scored against
        about = {"source": args.data, "model_dir": str(args.model_dir), "registry": None}
        packet_decisions = PacketDecisions.of_classifier(decision, result.receiver_offset_hz)
        write_decision_file(args.out, packet_decisions, ids, start, snr, about)
    if args.plots:
        write_plots(args.plots, result, decision, ids, clf)
    if not result.n_packets:
        logging.getLogger(__name__).warning(
            "%s: %s (the model knows devices %s; these are %s): the accuracies are undefined",
            args.data,
            _NO_KNOWN,
            describe_ids(result.device_ids),
            describe_ids(result.unknown_devices),
        )
    if args.json:
        print_json(
            {"type": "summary", **result.to_dict()},
            reasons={"accuracy_cnn": _NO_KNOWN, "accuracy_hybrid": _NO_KNOWN},
        )
        return 0
    print(
        f"packets {result.n_packets}  accuracy CNN {_score(result.accuracy_cnn)}  "
        f"hybrid {_score(result.accuracy_hybrid)}"
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


def _score(v: float) -> str:
    return f"{v:.4f}" if math.isfinite(v) else "-"
