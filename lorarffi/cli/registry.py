"""``lora-rffi registry``: list, show, remove, rename, export and import enrolled devices.

- ``lora-rffi registry list REG [--json]``: the registry's model, threshold and devices.
- ``lora-rffi registry show REG ID [--json]``: one device.
- ``lora-rffi registry remove REG ID [--json]``: remove a device and its embeddings (its audit rows stay).
- ``lora-rffi registry rename REG ID NAME [--json]``.
- ``lora-rffi registry export REG OUT [--json]``: a portable file to move to another site.
- ``lora-rffi registry import FILE REG [--json]``: into a new registry, or merged into one of the same model.

REG is an SQLite file or a database URL. ``--json`` prints one JSON document.
"""

from __future__ import annotations

import argparse
from typing import Any

from lorarffi.cli.common import HelpFormatter, add_verbosity_args, check_output, json_text

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "add_arguments", "run"]

HELP = "list, show, remove, rename, export and import enrolled devices"
DESCRIPTION = (
    "Manage a device registry (an SQLite file or a database URL): list its devices, show, remove or rename "
    "one, export it to a portable file and import that file at another site. A registry holds the devices "
    "enrolled with `lora-rffi enroll`: their reference fingerprints, CFO statistics and the audit log of "
    "every decision made against them."
)
EPILOG = "example: lora-rffi registry list fleet.db --json"
_EXAMPLES = {
    "list": "fleet.db",
    "show": "fleet.db 21",
    "remove": "fleet.db 21",
    "rename": "fleet.db 21 'pump house'",
    "export": "fleet.db fleet-export.zip",
    "import": "fleet-export.zip site2.db",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="registry_command", metavar="ACTION", required=True)

    def action(name: str, help: str, *positionals: tuple[str, type, str]) -> None:
        example = _EXAMPLES[name]
        p = sub.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog=f"example: lora-rffi registry {name} {example}",
            formatter_class=HelpFormatter,
        )
        add_verbosity_args(p, top=False)
        for dest, kind, arg_help in positionals:
            p.add_argument(dest, type=kind, help=arg_help)
        p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
        p.set_defaults(func=run)

    reg = ("registry", str, "registry: SQLite file or database URL")
    device = ("device_id", int, "device id")
    action("list", "list the registry's model, threshold and devices", reg)
    action("show", "show one enrolled device", reg, device)
    action("remove", "remove a device and its embeddings (its audit rows stay)", reg, device)
    action("rename", "give a device a new name", reg, device, ("name", str, "the new name"))
    action("export", "write the registry to a portable file", reg, ("out", str, "portable file to write"))
    sub.choices["export"].add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists (default: refuse)"
    )
    action(
        "import",
        "read a portable file into a registry (created if missing, else merged)",
        ("file", str, "portable file written by `registry export`"),
        reg,
    )


def run(args: argparse.Namespace) -> int:
    from lorarffi.rffi.registry import Registry

    if args.registry_command == "import":
        summary = Registry.import_(args.file, args.registry)
        verb = "created" if summary.created else "merged into"
        result: dict[str, Any] = {
            "registry": summary.registry,
            "created": summary.created,
            "device_ids": list(summary.device_ids),
            "n_embeddings": summary.n_embeddings,
        }
        text = (
            f"{verb} {summary.registry}: {len(summary.device_ids)} devices, "
            f"{summary.n_embeddings} embeddings from {args.file}"
        )
        return _emit(args, result, text)
    with Registry.open(args.registry) as reg:
        if args.registry_command == "list":
            return _emit(args, _overview(reg), _overview_text(reg))
        if args.registry_command == "show":
            record = reg.device(args.device_id)
            return _emit(args, record.to_dict(), _device_text(record))
        if args.registry_command == "remove":
            record = reg.remove(args.device_id)
            text = (
                f"removed device {record.device_id} and its {record.n_embeddings} embeddings from {reg.label}"
            )
            return _emit(args, {"removed": record.to_dict()}, text)
        if args.registry_command == "rename":
            record = reg.rename(args.device_id, args.name)
            return _emit(args, record.to_dict(), f"device {record.device_id} is now named {record.name!r}")
        check_output(args.out, overwrite=args.overwrite, flag="OUT")
        out = reg.export(args.out)
        devices = reg.devices()
        n_emb = sum(d.n_embeddings for d in devices)
        result = {"file": str(out), "n_devices": len(devices), "n_embeddings": n_emb}
        return _emit(args, result, f"wrote {out}: {len(devices)} devices, {n_emb} embeddings")


def _emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> int:
    print(json_text(result) if args.json else text)
    return 0


def _overview(reg) -> dict[str, Any]:
    threshold = reg.threshold
    return {
        "registry": reg.label,
        "schema_version": reg.schema_version,
        "model_fingerprint": reg.model_fingerprint,
        "model_info": reg.model_info,
        "embedding_dim": reg.embedding_dim,
        "created_at": reg.created_at.isoformat(),
        "threshold": None if threshold is None else threshold.to_dict(),
        "packet_input": reg.packet_input,
        "devices": [d.to_dict() for d in reg.devices()],
    }


_ENROLLED_FROM = {
    "preamble": "from preambles alone",
    "whole_packets": "from whole packets (--whole-packets)",
    "mixed": "from preambles alone and from whole packets",
    None: "(not recorded)",
}


def _overview_text(reg) -> str:
    threshold = reg.threshold
    lines = [
        f"registry    {reg.label} (schema {reg.schema_version})",
        f"model       {reg.model_fingerprint}, {reg.embedding_dim}-d embeddings",
        "threshold   "
        + (
            "not set"
            if threshold is None
            else f"{threshold.value:.6g} at FAR {threshold.far:g} (k={threshold.k}, score "
            f"{threshold.score or 'knn'}, {threshold.method})"
        ),
        "enrolled    " + _ENROLLED_FROM.get(reg.packet_input, str(reg.packet_input)),
    ]
    devices = reg.devices()
    lines.append(f"devices     {len(devices)}")
    if devices:
        lines.append(
            f"{'id':>10}  {'name':<20} {'enrolled (UTC)':<19} {'packets':>7} {'embeddings':>10} "
            f"{'CFO mean Hz':>12} {'CFO std Hz':>10}"
        )
        lines += [
            f"{d.device_id:>10}  {_text(d.name)[:20]:<20} {d.enrolled_at:%Y-%m-%d %H:%M:%S} {d.n_packets:>7} "
            f"{d.n_embeddings:>10} {_num(d.cfo_mean_hz, '.1f'):>12} {_num(d.cfo_std_hz, '.1f'):>10}"
            for d in devices
        ]
    return "\n".join(lines)


def _device_text(record) -> str:
    return "\n".join(f"{key:<14}{_text(value)}" for key, value in record.to_dict().items())


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
