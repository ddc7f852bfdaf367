"""Loading a labelled preamble selection for ``train`` and ``evaluate``."""

from __future__ import annotations

import argparse
import logging

from lorarffi.cli.common import lora_config
from lorarffi.errors import ConfigError

__all__ = ["load_selection"]

log = logging.getLogger(__name__)


def load_selection(args: argparse.Namespace):
    """``(iq, device_ids, cfg, info)`` of ``args.data`` restricted to ``--devices`` / ``--packets``."""
    from lorarffi.datasets.native import open_preamble_file

    with open_preamble_file(args.data) as pf:
        rows = pf.select(args.devices, args.packets)
        if rows.size == 0:
            raise ConfigError(
                f"{args.data}: the selection devices={args.devices} packets={args.packets} is empty"
            )
        iq = pf.read_rows(rows)
        ids = pf.device_ids[rows]
        cfg = lora_config(args, pf.cfg)  # the file's parameters (or the public dataset's), flags override
    packets = None if args.packets is None else [args.packets.start, args.packets.stop]
    info = {"file": str(args.data), "devices": args.devices, "packets": packets, "n_packets": int(rows.size)}
    return iq, ids, cfg, info
