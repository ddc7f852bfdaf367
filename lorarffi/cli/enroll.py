"""``lora-rffi enroll MODEL_DIR INPUT --registry REG``: add devices to a registry (or enroll them again)
without retraining: their packets are embedded by the model and stored as reference embeddings.

- INPUT a dataset: each device of the file (``--devices``) from its ``--packets``; ``--device-id N`` enrolls
  the file's device N alone (``--name`` names it).
- INPUT a recording: detection runs first, and every detected packet (``--packets`` of them) is enrolled as
  ``--device-id N`` (required).

The registry is created when missing, bound to the model; a registry of another model is refused.
"""

from __future__ import annotations

import argparse

from lorarffi.cli.common import print_json
from lorarffi.cli.inputs import add_input_args

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run"]

HELP = "enroll devices into a registry from a dataset or a recording (no retraining)"
DESCRIPTION = (
    "Enroll devices without retraining: embed their packets with MODEL_DIR's extractor and store the "
    "embeddings and CFO statistics in the registry REG (an SQLite file, created when missing, or a database "
    "URL). INPUT is a preamble dataset (device ids from the file) or a recording (detection runs first; give "
    "--device-id). Enrolling a device again replaces its references. The model's weights are only read."
)
EPILOG = (
    "example: lora-rffi enroll runs/extractor fleet_day1.h5 --registry fleet.db --devices 21-30 "
    "--packets 0:100"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_args(p, model_help="model directory written by `lora-rffi train`")
    p.add_argument(
        "--device-id",
        type=int,
        default=None,
        help="recording: the id every detected packet is enrolled as; dataset: enroll the file's device N",
    )
    p.add_argument("--name", default=None, help="a name for the device (with --device-id)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from lorarffi.cli.inputs import is_dataset, read_input
    from lorarffi.cli.progress import progress_bar, progress_enabled
    from lorarffi.errors import ConfigError, ModelError
    from lorarffi.rffi.embedding import load_embedder
    from lorarffi.rffi.enroll import enroll
    from lorarffi.rffi.registry import Registry

    if args.name is not None and args.device_id is None:
        raise ConfigError("--name names one device: give --device-id too")
    emb = load_embedder(args.model_dir, torch_device=args.device)
    dataset = is_dataset(args.input)
    if dataset and args.device_id is not None:
        if args.devices is not None and args.devices != [args.device_id]:
            raise ConfigError(f"--devices {args.devices} and --device-id {args.device_id} disagree: give one")
        args.devices = [args.device_id]
    elif not dataset and args.device_id is None:
        raise ConfigError(f"{args.input} is a recording: give --device-id, the id of the device it holds")
    packets = read_input(args, emb)
    ids = packets.labels if dataset else np.full(len(packets), args.device_id, np.int64)
    model_info = {
        "model_dir": str(args.model_dir),
        "model": emb.config.model_name,
        "objective": emb.objective,
        "representation": emb.config.representation.get("name"),
        "lora": emb.lora.to_dict(),
    }
    if not emb.fingerprint:
        raise ModelError(
            f"{args.model_dir}: config.json records no weights hash; save the model again to enroll"
        )
    with Registry.create(
        args.registry,
        model_fingerprint=emb.fingerprint,
        embedding_dim=emb.dim,
        model_info=model_info,
        exist_ok=True,
    ) as reg:
        names = None if args.name is None else {int(args.device_id): args.name}
        with progress_bar("enroll", len(packets), enabled=progress_enabled(args)) as advance:
            records = enroll(
                emb, reg, packets.preambles, ids, names=names, cfo_hz=packets.cfo_hz, progress=advance,
                packet_input=packets.packet_input,
            )
        label = reg.label
    result = {
        "registry": label,
        "model_fingerprint": emb.fingerprint,
        "source": args.input,
        "n_packets": len(packets),
        "devices": [r.to_dict() for r in records],
    }
    if args.json:
        print_json({"type": "summary", **result})
    else:
        for r in records:
            cfo = "-" if r.cfo_mean_hz is None else f"{r.cfo_mean_hz:.1f} Hz"
            name = f" ({r.name})" if r.name else ""
            print(f"enrolled device {r.device_id}{name}: {r.n_packets} packets, CFO mean {cfo}")
        print(f"{len(records)} device(s) enrolled into {label}")
    return 0
