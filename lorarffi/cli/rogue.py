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
import json

from lorarffi.cli.common import add_lora_args, int_range, slice_arg

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run"]

HELP = "rogue-detection figures of a model: ROC, AUC, EER, threshold and FRR at FAR 1%%"
DESCRIPTION = (
    "Enroll the devices of A (in memory), score the packets of B (legitimate: A's devices) and C (rogues: "
    "devices not in A) by their mean distance to the nearest device's k nearest references, and report the "
    "per-packet ROC, AUC, EER, and the threshold and false-reject rate at the false-accept rate --far."
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
            f"--{name}-packets", type=slice_arg, default=None, help=f"packet range per device of {what}"
        )
    p.add_argument("--k", type=int, default=15, help="neighbours the score averages (default 15)")
    p.add_argument("--far", type=float, default=0.01, help="false-accept rate of the reported threshold")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--plots", default=None, metavar="DIR", help="write the ROC (roc.png) here")
    p.add_argument("--device", default=None, help="torch device (default CUDA if available, else CPU)")
    add_lora_args(p, default_from="the file's, else the model's")


def _embedded(args: argparse.Namespace, emb, path: str, devices, packets):
    """Embeddings and device ids of a file's selection, in the model's view."""
    from lorarffi.cli.data import check_model_parameters, load_selection

    sel_args = argparse.Namespace(**{**vars(args), "data": path, "devices": devices, "packets": packets})
    sel = load_selection(sel_args, fallback=emb.lora)
    check_model_parameters(sel, emb.lora, sel_args, args.model_dir)
    return emb.embed(emb.preprocess(sel.iq, source=path).iq), sel.device_ids


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from lorarffi.errors import ConfigError
    from lorarffi.rffi.embedding import load_embedder
    from lorarffi.rffi.knn import ReferenceIndex
    from lorarffi.rffi.rogue import plot_roc, rogue_figures

    emb = load_embedder(args.model_dir, torch_device=args.device)
    ref, ref_ids = _embedded(args, emb, args.enroll, args.devices, args.enroll_packets)
    index = ReferenceIndex(ref_ids, ref, k=args.k)
    enrolled = index.device_ids
    legit, legit_ids = _embedded(args, emb, args.legit, enrolled.tolist(), args.legit_packets)
    rogue, rogue_ids = _embedded(args, emb, args.rogue, args.rogue_devices, args.rogue_packets)
    overlap = sorted(set(rogue_ids.tolist()) & set(enrolled.tolist()))
    if overlap:
        raise ConfigError(
            f"{args.rogue}: device(s) {overlap} are enrolled from {args.enroll}; rogues must be other "
            "devices "
            "(select them with --rogue-devices)"
        )
    near = index.search(legit)
    figures = rogue_figures(near.score, index.search(rogue).score, far=args.far)
    result = {
        **figures.to_dict(),
        "k": args.k,
        "n_enrolled_devices": int(enrolled.size),
        "accuracy": float(np.mean(near.device_id == legit_ids)),
        "plots": [],
    }
    if args.plots:
        path = plot_roc(figures, f"{args.plots}/roc.png", title=f"rogue detection, k={args.k}")
        result["plots"].append(str(path))
    if args.json:
        print(json.dumps(result))
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
