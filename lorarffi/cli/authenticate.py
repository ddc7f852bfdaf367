"""``lora-rffi authenticate MODEL_DIR INPUT --registry REG``: decide each packet of a dataset or recording as
an enrolled device or ``rogue`` (K-NN score and threshold, CFO gate; see lorarffi.rffi.authenticate), and
append every decision to the registry's audit log.

``--json``: one object per packet (``"type": "packet"``), then one summary object (``"type": "summary"``):
``n_packets``, ``accuracy`` (share of enrolled devices' packets given their own id) and ``rogue_rate`` (share
of packets of ids not enrolled called rogue) when INPUT says who sent each packet, ``false_reject_rate``, the
``threshold`` used (value, far, method, k); with ``--packets-per-decision M`` (M > 1) the same figures over
fused decisions beside them as ``fused_accuracy``, ``fused_rogue_rate``, ... (single-packet figures stay).
"""

from __future__ import annotations

import argparse
import json
import sys

from lorarffi.cli.inputs import add_input_args

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
    p.add_argument("--k", type=int, default=15, help="neighbours the score averages (default 15)")
    p.add_argument(
        "--far",
        type=float,
        default=None,
        help="false-accept rate of the threshold, chosen from the enrollment packets when the stored one was "
        "chosen for another (default: the stored threshold's, else 0.01)",
    )
    p.add_argument(
        "--packets-per-decision",
        type=int,
        default=1,
        metavar="M",
        help="also decide groups of M consecutive packets of one transmitter (default 1: single packets)",
    )
    p.add_argument("--no-cfo-gate", action="store_true", help="decide on the embedding score alone")
    p.add_argument("--json", action="store_true", help="one JSON object per packet, then a summary object")


def run(args: argparse.Namespace) -> int:
    from lorarffi.cli.inputs import read_input
    from lorarffi.rffi.authenticate import authenticate, summarize
    from lorarffi.rffi.embedding import load_embedder
    from lorarffi.rffi.enroll import check_bound
    from lorarffi.rffi.registry import Registry

    emb = load_embedder(args.model_dir, torch_device=args.device)
    with Registry.open(args.registry, model_fingerprint=emb.fingerprint or None) as reg:
        check_bound(emb, reg)
        packets = read_input(args, emb)
        decisions = authenticate(
            emb,
            reg,
            packets.preambles,
            cfo_hz=packets.cfo_hz,
            k=args.k,
            far=args.far,
            packets_per_decision=args.packets_per_decision,
            transmitter_ids=packets.labels if packets.kind == "dataset" else None,
            cfo_gate=not args.no_cfo_gate,
            source=args.input,
            start_sample=packets.start_sample,
            snr_db=packets.snr_db,
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
    out = sys.stdout
    for i, rec in enumerate(decisions.to_records()):
        rec = {
            "type": "packet",
            "packet": i,
            "true_device": None if packets.labels is None else int(packets.labels[i]),
            "start_sample": None if packets.start_sample is None else int(packets.start_sample[i]),
            "snr_db": None if packets.snr_db is None else float(packets.snr_db[i]),
            **rec,
        }
        out.write((json.dumps(rec) if args.json else _line(rec)) + "\n")
    if args.json:
        out.write(json.dumps(summary) + "\n")
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
