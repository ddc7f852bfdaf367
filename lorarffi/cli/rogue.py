"""``lora-rffi rogue MODEL_DIR --enroll A.h5 --legit B.h5 --rogue C.h5``: how well the model's embedding tells
enrolled devices from strangers, per packet: ROC (PNG with ``--plots``), AUC, EER, and the threshold and FRR
at a false-accept rate (1 % by default).

A's devices are enrolled in memory (no registry is written); B's packets of those devices are the legitimate
ones, C's packets (of devices not in A) the rogue ones; every packet is scored as ``authenticate`` scores it
(mean distance to its nearest device's k nearest references; lorarffi.rffi.knn). The CFO gate is left out: the
figures are the fingerprint's. The same file may serve twice with disjoint ``--*-packets`` ranges.
"""

from __future__ import annotations

import argparse

from lorarffi.cli.classify import add_score_arg
from lorarffi.cli.common import (
    add_json_arg,
    add_lora_args,
    add_plots_arg,
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

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "add_arguments", "run"]

HELP = "rogue-detection figures of a model: ROC, AUC, EER, threshold and FRR at FAR 1%%"
DESCRIPTION = (
    "Measure how well a model's fingerprints tell enrolled devices from strangers. The devices of file A are "
    "enrolled in memory (no registry is written); each packet of B (the same devices on another day) and of "
    "C (devices never enrolled: the rogues) is scored by its distance to the nearest enrolled device. "
    "Reports the ROC curve's area (AUC), the equal error rate (EER), and the threshold and false-reject rate "
    "at the false-accept rate --far; --plots draws the ROC."
)
EPILOG = (
    "example: lora-rffi rogue runs/extractor --enroll day1.h5 --legit day2.h5 --rogue strangers.h5 "
    "--devices 1-10 --plots runs/plots"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model directory written by `lora-rffi train`")
    p.add_argument("--enroll", required=True, metavar="A.h5", help="preamble file of the devices to enroll")
    p.add_argument("--legit", required=True, metavar="B.h5", help="preamble file of their test packets")
    p.add_argument("--rogue", required=True, metavar="C.h5", help="preamble file of devices not enrolled")
    p.add_argument("--devices", type=int_range, default=None, help="devices of A to enroll (default all)")
    p.add_argument("--rogue-devices", type=int_range, default=None, help="devices of C (default all)")
    for name, what in (("enroll", "A"), ("legit", "B"), ("rogue", "C")):
        p.add_argument(
            f"--{name}-packets",
            type=slice_arg,
            default=None,
            help=f"packet range per device of {what} (default all)",
        )
    p.add_argument("--k", type=positive_int, default=15, help="neighbours the score averages (default 15)")
    add_score_arg(p)
    p.add_argument(
        "--far",
        type=_rate,
        default=0.01,
        help="false-accept rate of the reported threshold, 0-1 (default 0.01)",
    )
    add_json_arg(p, "one JSON object")
    add_plots_arg(p, "the ROC (roc.png)")
    add_whole_packets_arg(p)
    add_torch_device_arg(p)
    add_lora_args(p, default_from="the file's, else the model's")


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not valid: use a rate between 0 and 1, e.g. 0.01")
    return value


def _embedded(args: argparse.Namespace, emb, path: str, devices, packets):
    """Embeddings and device ids of a file's selection, in the model's view."""
    from lorarffi.cli.data import check_model_parameters, load_selection

    sel_args = argparse.Namespace(**{**vars(args), "data": path, "devices": devices, "packets": packets})
    sel = load_selection(sel_args, fallback=emb.lora)
    check_model_parameters(sel, emb.lora, sel_args, args.model_dir)
    pre = emb.preprocess(sel.iq, source=path, packet_symbols=packet_symbols_of(args))
    return emb.embed(pre.iq), sel.device_ids


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from lorarffi.errors import ConfigError
    from lorarffi.rffi.embedding import load_embedder
    from lorarffi.rffi.knn import ReferenceIndex
    from lorarffi.rffi.rogue import plot_roc, rogue_figures

    if args.plots:
        check_output(args.plots, overwrite=True, flag="--plots", directory=True)
    emb = load_embedder(args.model_dir, torch_device=args.device)
    ref, ref_ids = _embedded(args, emb, args.enroll, args.devices, args.enroll_packets)
    index = ReferenceIndex(ref_ids, ref, k=args.k, score=args.score)
    enrolled = index.device_ids
    legit, legit_ids = _embedded(args, emb, args.legit, enrolled.tolist(), args.legit_packets)
    rogue, rogue_ids = _embedded(args, emb, args.rogue, args.rogue_devices, args.rogue_packets)
    overlap = sorted(set(rogue_ids.tolist()) & set(enrolled.tolist()))
    if overlap:
        raise ConfigError(
            f"{args.rogue}: devices {describe_ids(overlap)} are enrolled from {args.enroll}; rogues must be "
            "other devices (select them with --rogue-devices)"
        )
    near = index.search(legit)
    figures = rogue_figures(near.score, index.search(rogue).score, far=args.far)
    result = {
        **figures.to_dict(),
        "k": args.k,
        "score": args.score,
        "n_enrolled_devices": int(enrolled.size),
        "accuracy": float(np.mean(near.device_id == legit_ids)),
        "plots": [],
    }
    if args.plots:
        path = plot_roc(figures, f"{args.plots}/roc.png", title=f"rogue detection, k={args.k}")
        result["plots"].append(str(path))
    if args.json:
        print_json({"type": "summary", **result})
        return 0
    print(
        f"{figures.n_legit} legitimate packets of {enrolled.size} enrolled devices, {figures.n_rogue} rogue "
        f"packets; k={args.k}"
    )
    print(
        f"AUC {figures.auc:.4f}  EER {100 * figures.eer:.2f} % (threshold {figures.eer_threshold:.4f})  "
        f"identification accuracy {100 * result['accuracy']:.2f} %"
    )
    print(
        f"at FAR {100 * figures.far:g} %: threshold {figures.threshold:.4f}, FRR {100 * figures.frr:.2f} % "
        f"(measured FAR {100 * figures.far_measured:.2f} %)"
    )
    for path in result["plots"]:
        print(f"wrote {path}")
    return 0
