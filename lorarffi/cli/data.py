"""Loading a labelled preamble selection for ``train`` and ``evaluate``."""

from __future__ import annotations

import argparse
import logging

from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError

__all__ = ["load_selection", "lora_config_for"]

log = logging.getLogger(__name__)


def lora_config_for(args: argparse.Namespace, file_cfg: LoRaConfig | None) -> LoRaConfig:
    """The file's LoRa parameters (or SF7 / 125 kHz / 1 MS/s, the public dataset's), overridden by flags."""
    base = file_cfg or LoRaConfig()
    changes = {
        k: v for k, v in (("sf", args.sf), ("bw_hz", args.bw_hz), ("fs_hz", args.fs_hz)) if v is not None
    }
    return base.replace(**changes) if changes else base


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
        cfg = lora_config_for(args, pf.cfg)
    packets = None if args.packets is None else [args.packets.start, args.packets.stop]
    info = {"file": str(args.data), "devices": args.devices, "packets": packets, "n_packets": int(rows.size)}
    return iq, ids, cfg, info
