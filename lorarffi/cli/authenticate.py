"""``lora-rffi authenticate MODEL_DIR INPUT --registry REG``: decide each packet of a dataset or recording as
an enrolled device or ``rogue`` (K-NN score and threshold, CFO gate; see lorarffi.rffi.authenticate), and
append every decision to the registry's audit log. The decisions are ``lora-rffi classify --registry``'s
(:func:`lorarffi.rffi.classify.classify_preambles`), scored where the input says who sent each packet.

``--json``: one object per packet (``"type": "packet"``), then one summary object (``"type": "summary"``):
``n_packets``, ``accuracy`` (share of enrolled devices' packets given their own id) and ``rogue_rate`` (share
of packets of ids not enrolled called rogue) when INPUT says who sent each packet, ``false_reject_rate``, the
``threshold`` used (value, far, method, k); with ``--packets-per-decision M`` (M > 1) the same figures over
fused decisions beside them as ``fused_accuracy``, ``fused_rogue_rate``, ... (single-packet figures stay).
"""

from __future__ import annotations

import argparse
import math
import sys

from lorarffi.cli.classify import add_decision_file_arg, add_registry_decision_args
from lorarffi.cli.common import json_text
from lorarffi.cli.inputs import add_input_args
from lorarffi.cli.progress import add_progress_arg

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "add_arguments", "run"]

HELP = "authenticate packets against a registry: an enrolled device id or rogue"
DESCRIPTION = (
    "Authenticate the packets of INPUT (a preamble dataset or a recording) against the registry REG: each "
    "packet's nearest enrolled device by K-NN in the model's embedding space, accepted when its score (mean "
    "distance to that device's k nearest references) is within the threshold chosen from the enrollment "
    "packets for --far and its CFO within the device's enrolled window; otherwise 'rogue'. Every decision is "
    "appended to the registry's audit log."
)
EPILOG = "example: lora-rffi authenticate runs/extractor day2.h5 --registry fleet.db --json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_args(p, model_help="the model the registry was enrolled with")
    add_registry_decision_args(p)
    p.add_argument(
        "--packets-per-decision",
        type=int,
        default=1,
        metavar="M",
        help="also decide groups of M consecutive packets of one transmitter (default 1: single packets)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per packet, then a summary object")
    add_progress_arg(p)
    add_decision_file_arg(p)


def run(args: argparse.Namespace) -> int:
    from lorarffi.cli.classify import check_decision_file, open_registry_decider, write_decision_file
    from lorarffi.cli.inputs import read_input
    from lorarffi.cli.progress import progress_bar, progress_enabled
    from lorarffi.rffi.authenticate import check_packet_input, decide_packets, summarize
    from lorarffi.rffi.classify import PacketDecisions

    check_decision_file(args.out)
    with open_registry_decider(args) as (emb, reg, auth):
        packets = read_input(args, emb)
        check_packet_input(reg, packets.packet_input)
        with progress_bar("authenticate", len(packets), enabled=progress_enabled(args)) as advance:
            decisions = decide_packets(  # classify --registry's decisions, appended to the audit log
                emb,
                auth,
                reg,
                packets.preambles,
                cfo_hz=packets.cfo_hz,
                packets_per_decision=args.packets_per_decision,
                transmitter_ids=packets.labels if packets.kind == "dataset" else None,
                source=args.input,
                start_sample=packets.start_sample,
                snr_db=packets.snr_db,
                progress=advance,
            )
        summary = {
            "type": "summary",
            **summarize(decisions, packets.labels, [d.device_id for d in reg.devices()]),
            "k": args.k,
            "threshold": reg.threshold.to_dict(),
            "receiver_offset_hz": decisions.receiver_offset_hz,
            "registry": reg.label,
            "model_fingerprint": reg.model_fingerprint,
            "source": args.input,
        }
    if args.out is not None:  # the file `classify --registry` writes, with the input's labels
        about = {"source": args.input, "model_dir": str(args.model_dir), "registry": summary["registry"]}
        offset = None if auth.gate is None else decisions.receiver_offset_hz
        write_decision_file(
            args.out,
            PacketDecisions.of_registry(decisions, offset),
            packets.labels,
            packets.start_sample,
            packets.snr_db,
            about,
        )
    out = sys.stdout
    start, snr = packets.start_sample, packets.snr_db
    for i, rec in enumerate(decisions.to_records()):
        rec = {
            "type": "packet",
            "packet": i,
            "true_device": None if packets.labels is None else int(packets.labels[i]),
            "start_sample": None if start is None or start[i] < 0 else int(start[i]),
            "snr_db": None if snr is None or not math.isfinite(snr[i]) else float(snr[i]),
            **rec,
        }
        out.write((json_text(rec) if args.json else _line(rec)) + "\n")
    if args.json:
        out.write(json_text(summary) + "\n")
    else:
        out.write(_summary_text(summary) + "\n")
    return 0


def _line(rec: dict) -> str:
    true = "" if rec["true_device"] is None else f" (true {rec['true_device']})"
    fused = "" if rec.get("fused_decision") is None else f"  fused: {rec['fused_decision']}"
    why = "" if rec["reason"] is None else f" [{rec['reason']}]"
    cfo = "-" if rec["cfo_hz"] is None else f"{rec['cfo_hz']:.1f}"
    return (
        f"packet {rec['packet']:>6}: {str(rec['decision']):>8}{why}{true}  nearest {rec['nearest_device']} "
        f"score {rec['score']:.4f}  CFO {cfo} Hz{fused}"
    )


def _summary_text(s: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f} %"

    t = s["threshold"]
    lines = [
        f"{s['n_packets']} packets: {s['n_accepted']} accepted, {s['n_rogue']} rogue; "
        f"threshold {t['value']:.6g} (FAR {t['far']:g}, k={t['k']})",
        f"accuracy {pct(s['accuracy'])}  rogue rate {pct(s['rogue_rate'])}  "
        f"false rejects {pct(s['false_reject_rate'])}",
    ]
    if "fused_n_decisions" in s:
        lines.append(
            f"fused over {s['packets_per_decision']} packets ({s['fused_n_decisions']} decisions): accuracy "
            f"{pct(s['fused_accuracy'])}  rogue rate {pct(s['fused_rogue_rate'])}  "
            f"false rejects {pct(s['fused_false_reject_rate'])}"
        )
    return "\n".join(lines)
