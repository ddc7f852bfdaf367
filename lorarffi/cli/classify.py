"""``lora-rffi classify MODEL_DIR INPUT [--registry REG] [-o FILE] [--json]``: one decision per packet of a
dataset or a recording, no labels needed, from a closed-set model or a device registry.

The decisions come from :func:`lorarffi.rffi.classify.classify_preambles`, the path ``evaluate`` and
``authenticate`` score; this module also holds the model loading those commands share
(:func:`load_classifier_for`, :func:`open_registry_decider`).

``--json``: one object per packet (``"type": "packet"``: ``packet``, ``device``, ``verdict``, ``score``,
``confidence``, ``cfo_hz``, ``snr_db``, ``start_sample``, ``label``, ``cnn_device``, ``nearest_device``,
``reason``; null where the model or the input gives none), then one summary object (``"type": "summary"``:
``n_packets``, ``per_device``, ``per_verdict``, ``rejected``, ``unsupported``, ``receiver_offset_hz``,
``source``, ``model_dir``, ``registry``, ``output``). With ``-o`` the packets go to the file and stdout
carries the summary alone.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lorarffi.cli.common import add_receiver_offset_arg, json_text, positive_int
from lorarffi.cli.inputs import add_input_args
from lorarffi.cli.progress import add_progress_arg

if TYPE_CHECKING:
    from lorarffi.rffi.authenticate import Authenticator
    from lorarffi.rffi.classify import PacketDecisions
    from lorarffi.rffi.embedding import Embedder
    from lorarffi.rffi.inference import Classifier

__all__ = [
    "HELP",
    "DESCRIPTION",
    "EPILOG",
    "add_arguments",
    "run",
    "load_classifier_for",
    "open_registry_decider",
    "add_registry_decision_args",
    "add_score_arg",
    "add_decision_file_arg",
    "check_decision_file",
    "write_decision_file",
]

HELP = "decide every packet of a dataset or recording: device, verdict, score, CFO, SNR (no labels needed)"
DESCRIPTION = (
    "Classify the packets of INPUT (a preamble dataset, ours or the public layout, or a recording: detection "
    "runs first) with MODEL_DIR: one decision per packet (device, verdict, score or confidence, CFO, SNR, "
    "start sample), written to -o FILE (.csv, .jsonl or .h5, chosen by the extension) or printed, then a "
    "summary (packets per device and verdict, rejected, unsupported). Without --registry the model's closed "
    "set decides (CNN and CFO gate: verdict accept or unknown); with --registry REG the devices enrolled in "
    "REG do (K-NN score, threshold, CFO gate: verdict accept or rogue). Labels are not needed: preambles "
    "stored by `live --preambles` work as they are."
)
EPILOG = (
    "example: lora-rffi classify runs/model night.h5 -o predictions.csv\n"
    "example: lora-rffi classify runs/extractor capture.sigmf-meta --registry fleet.db --json"
)


def add_score_arg(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--score {cohort,knn}``: what packets are decided on (:mod:`lorarffi.rffi.knn`)."""
    from lorarffi.rffi.knn import DEFAULT_SCORE, SCORES

    p.add_argument(
        "--score",
        choices=SCORES,
        default=DEFAULT_SCORE,
        help=prefix + "what packets are decided on: 'knn' (default), the mean distance to the nearest "
        "device's k nearest references; 'cohort', that distance over the square root of the runner-up "
        "device's (more accepted under shift in a fleet of look-alikes, fewer in small registries with two "
        "devices close to each other: docs/models.md)",
    )


def add_registry_decision_args(p: argparse.ArgumentParser) -> None:
    """``--k``, ``--score``, ``--far``, ``--no-cfo-gate``, ``--no-iq-gate``: how a registry decides
    (``classify --registry``, ``authenticate``)."""
    p.add_argument("--k", type=int, default=15, help="registry: neighbours the score averages (default 15)")
    add_score_arg(p, "registry: ")
    far_help = (
        "registry: false-accept rate of the threshold, chosen from the enrollment packets when the stored "
        "one was chosen for another (default: the stored threshold's, else 0.01)"
    )
    p.add_argument("--far", type=float, default=None, help=far_help)
    p.add_argument("--no-cfo-gate", action="store_true", help="registry: no CFO window check")
    p.add_argument(
        "--no-iq-gate",
        action="store_true",
        help="registry: no check of the transmitter's IQ image and carrier leakage against its enrollment",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_args(
        p,
        model_help="model directory written by `lora-rffi train` (with --registry: the one REG was enrolled "
        "with)",
        registry_help="decide against the devices enrolled in this registry (SQLite file or database URL) "
        "instead of the model's closed set (nothing is added to its audit log)",
    )
    add_decision_file_arg(p, printed=True)
    p.add_argument("--json", action="store_true", help="one JSON object per packet, then a summary object")
    add_registry_decision_args(p)
    p.add_argument("--no-tracking", action="store_true", help="closed set: drift tracking off")
    add_receiver_offset_arg(p)
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        help="packets per decision call (closed set: drift tracking learns between calls) and per network "
        "call (registry) (default 64)",
    )
    add_progress_arg(p)


# -- model loading shared with evaluate and authenticate -----------------------------------------------
def _torch_device(args: argparse.Namespace) -> str | None:
    from lorarffi.cli.common import torch_device

    return torch_device(getattr(args, "device", None))


def load_classifier_for(args: argparse.Namespace) -> Classifier:
    """``args.model_dir`` as a closed-set classifier with ``--no-tracking`` and ``--receiver-offset-ppm``
    applied."""
    from lorarffi.rffi.inference import load_classifier

    clf = load_classifier(args.model_dir, torch_device=_torch_device(args))
    if getattr(args, "no_tracking", False):
        clf.set_tracking(False)
    if getattr(args, "receiver_offset_ppm", None) is not None:
        clf.set_receiver_offset_ppm(args.receiver_offset_ppm)
    return clf


@contextlib.contextmanager
def open_registry_decider(args: argparse.Namespace) -> Iterator[tuple[Embedder, Any, Authenticator]]:
    """Yield ``args.model_dir``'s embedder, the registry ``args.registry`` (open) and its authenticator
    (``--k``, ``--far``, ``--no-cfo-gate``, ``--no-iq-gate``); a registry of another model is refused in one
    line."""
    from lorarffi.rffi.authenticate import open_authenticator
    from lorarffi.rffi.embedding import load_embedder
    from lorarffi.rffi.registry import Registry

    emb = load_embedder(args.model_dir, torch_device=_torch_device(args))
    with Registry.open(args.registry, model_fingerprint=emb.fingerprint or None) as reg:
        # packet_input is checked once the input is read (check_packet_input)
        auth = open_authenticator(emb, reg, k=args.k, far=args.far, cfo_gate=not args.no_cfo_gate,
                                  packet_input=None, score=args.score, iq_gate=not args.no_iq_gate)
        yield emb, reg, auth


# -- decision files shared with evaluate and authenticate ---------------------------------------------------
def add_decision_file_arg(p: argparse.ArgumentParser, *, printed: bool = False) -> None:
    """``-o/--out FILE``: the per-packet decisions as a .csv, .jsonl or .h5 file."""
    p.add_argument(
        "-o",
        "--out",
        default=None,
        metavar="FILE",
        help="write one decision per packet (device, verdict, score, confidence, CFO, SNR, start, label) to "
        "FILE: .csv, .jsonl or .h5 " + ("(default: print them)" if printed else "(default: none)"),
    )


def check_decision_file(path: str | None) -> None:
    """Refuse, before any work, an ``-o`` file of an unsupported format."""
    from lorarffi.errors import ConfigError
    from lorarffi.rffi.classify import OUTPUT_SUFFIXES

    if path is not None and not path.lower().endswith(OUTPUT_SUFFIXES):
        raise ConfigError(f"-o {path}: name a .csv, .jsonl or .h5 file")


def write_decision_file(
    path: str,
    decisions: PacketDecisions,
    labels: Any = None,
    start_sample: Any = None,
    snr_db: Any = None,
    about: dict[str, Any] | None = None,
) -> None:
    """Write ``-o FILE`` (:func:`lorarffi.rffi.classify.write_decisions`): the records of ``decisions`` with
    the input's labels, start samples and SNRs, and their summary with ``about`` (source, model...)."""
    from lorarffi.rffi.classify import write_decisions

    records = decisions.to_records(start_sample=start_sample, snr_db=snr_db, labels=labels)
    write_decisions(path, records, {**decisions.summary(), **(about or {}), "output": str(path)})


# -- the command -------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from lorarffi.cli.inputs import read_input
    from lorarffi.cli.progress import progress_bar, progress_enabled
    from lorarffi.rffi.classify import classify_preambles

    check_decision_file(args.out)
    with contextlib.ExitStack() as stack:
        auth = None
        if args.registry is not None:
            model, reg, auth = stack.enter_context(open_registry_decider(args))
            registry_label = reg.label
        else:
            model, registry_label = load_classifier_for(args), None
        packets = read_input(args, model)
        if auth is not None:
            from lorarffi.rffi.authenticate import check_packet_input

            check_packet_input(reg, packets.packet_input)
        with progress_bar("classify", len(packets), enabled=progress_enabled(args)) as advance:
            decisions = classify_preambles(
                model,
                packets.preambles,
                packets.cfo_hz,
                authenticator=auth,
                batch_size=args.batch_size,
                track=not args.no_tracking,
                progress=advance,
            )
    about = {"source": args.input, "model_dir": str(args.model_dir), "registry": registry_label}
    summary = {"type": "summary", **decisions.summary(), **about, "output": args.out}
    out = sys.stdout
    if args.out is not None:
        write_decision_file(args.out, decisions, packets.labels, packets.start_sample, packets.snr_db, about)
    else:
        if not args.json:
            out.write(_HEADER + "\n")
        records = decisions.to_records(
            start_sample=packets.start_sample, snr_db=packets.snr_db, labels=packets.labels
        )
        for rec in records:
            out.write((json_text({"type": "packet", **rec}) if args.json else _line(rec)) + "\n")
    out.write((json_text(summary) if args.json else _summary_text(summary)) + "\n")
    return 0


_HEADER = (
    f"{'packet':>7} {'device':>7} {'verdict':>8} {'score':>8} {'conf':>6} {'cfo_hz':>10} {'snr_db':>7} "
    f"{'start':>12}"
)


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['packet']:>7} {_fmt(r['device'], 'd'):>7} {r['verdict']:>8} {_fmt(r['score'], '.4f'):>8} "
        f"{_fmt(r['confidence'], '.3f'):>6} {_fmt(r['cfo_hz'], '.1f'):>10} {_fmt(r['snr_db'], '.1f'):>7} "
        f"{_fmt(r['start_sample'], 'd'):>12}"
    )


def _summary_text(s: dict[str, Any]) -> str:
    devices = ", ".join(f"{d}: {n}" for d, n in s["per_device"].items()) or "-"
    verdicts = ", ".join(f"{v} {n}" for v, n in s["per_verdict"].items()) or "-"
    lines = [
        f"{s['n_packets']} packets: {verdicts}; rejected {s['rejected']}, unsupported {s['unsupported']}",
        f"per device: {devices}",
    ]
    if s["output"]:
        lines.append(f"decisions written to {s['output']}")
    return "\n".join(lines)
