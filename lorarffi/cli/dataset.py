"""``lora-rffi dataset``: inspect preamble files and recordings, convert between HDF5 layouts.

- ``lora-rffi dataset info FILE [--json]``: layout, devices and packets per device, samples per packet, sample
  rate and LoRa parameters when known; for recordings (SigMF, WAV, raw with ``--format/--fs-hz``): rate,
  datatype, duration and annotations.
- ``lora-rffi dataset convert IN OUT --to public|native [--overwrite]``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

from lorarffi.cli.common import HelpFormatter, add_flag, add_verbosity_args, json_text, si_float

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "add_arguments", "run", "file_info"]

log = logging.getLogger(__name__)

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


HELP = "inspect and convert preamble datasets and recordings"
DESCRIPTION = ("Look inside the files lora-rffi reads: 'info' describes a preamble file (the HDF5 sets of "
               "aligned packet preambles train and evaluate use, in the public LoRa_RFFI layout or ours: "
               "devices, packets per device, LoRa parameters) or an IQ recording (sample rate, duration, "
               "annotations); 'convert' rewrites a preamble file from one HDF5 layout to the other.")
EPILOG = ("example: lora-rffi dataset info fleet_day1.h5\n"
          "         lora-rffi dataset convert dataset_training.h5 train_native.h5 --to native")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION")
    info = sub.add_parser("info", help="describe a preamble file or a recording",
                          description="Describe a preamble file (layout, devices, packets per device, "
                                      "samples per packet, LoRa parameters) or a recording (rate, datatype, "
                                      "duration, annotations).",
                          epilog="example: lora-rffi dataset info fleet_day1.h5 --json",
                          formatter_class=HelpFormatter)
    add_verbosity_args(info, top=False)
    info.add_argument("file", type=Path, help="HDF5 preamble file, SigMF (.sigmf-meta/.sigmf), WAV or raw IQ")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.add_argument("--format", choices=["cf32", "ci16", "cu8", "ci8"], default=None,
                      help="sample format of a raw headerless recording (default: none, the file says)")
    add_flag(info, "-s", "--fs-hz", type=si_float, default=None, metavar="FS_HZ",
             help="sample rate of a raw recording in Hz, e.g. 2.4M (default: none, the file says)")
    info.set_defaults(func=run)
    conv = sub.add_parser("convert", help="convert a preamble file between the public layout and ours",
                          description="Convert a preamble file between the public LoRa_RFFI layout ('data' + "
                                      "'label') and lora-rffi's own schema (docs/dataset-format.md). IQ and "
                                      "device ids are kept exactly; the public layout drops per-packet "
                                      "metadata. OUTPUT appears only when complete.",
                          epilog="example: lora-rffi dataset convert public.h5 train.h5 --to native",
                          formatter_class=HelpFormatter)
    add_verbosity_args(conv, top=False)
    conv.add_argument("input", type=Path, help="input HDF5 file (either layout)")
    conv.add_argument("output", type=Path, help="output HDF5 file")
    conv.add_argument("--to", choices=["public", "native"], required=True, help="output layout")
    conv.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    conv.add_argument("--json", action="store_true", help="print one JSON summary object instead of text")
    conv.set_defaults(func=run)
    parser.set_defaults(dataset_command=None, _dataset_parser=parser)


def run(args: argparse.Namespace) -> int:
    if args.dataset_command is None:
        args._dataset_parser.print_help(sys.stderr)
        return 2
    if args.dataset_command == "convert":
        from lorarffi.datasets.native import convert, open_preamble_file

        n = convert(args.input, args.output, args.to, overwrite=args.overwrite)
        with open_preamble_file(args.output) as pf:
            n_devices = len(set(pf.device_ids.tolist()))
        if args.json:
            print(json_text({"type": "summary", "file": str(args.output), "n_packets": n,
                             "n_devices": n_devices, "layout": args.to}))
        else:
            print(f"{args.output}: {n} packets of {n_devices} devices in the {args.to} layout")
        return 0
    info = file_info(args.file, format=args.format, fs_hz=args.fs_hz)
    if args.json:
        print(json_text({"type": "summary", **info}))
    else:
        print(_text(info))
    return 0


def _is_hdf5(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            for offset in (0, 512, 1024, 2048):  # HDF5 may have a user block of 512 * 2^k bytes
                fh.seek(offset)
                if fh.read(8) == _HDF5_SIGNATURE:
                    return True
    except OSError:
        return False
    return False


def file_info(path: Path, *, format: str | None = None, fs_hz: float | None = None) -> dict[str, Any]:
    """A JSON-ready description of a preamble file or a recording (what ``dataset info --json`` prints)."""
    from lorarffi.errors import InputDataError

    path = Path(path)
    if not path.exists() and not path.name.endswith((".sigmf-meta", ".sigmf-data")):
        raise InputDataError(path, "no such file")
    if path.is_file() and _is_hdf5(path):
        return _preamble_info(path)
    return _recording_info(path, format, fs_hz)


def _preamble_info(path: Path) -> dict[str, Any]:
    import numpy as np

    from lorarffi.datasets.native import open_preamble_file

    with open_preamble_file(path) as pf:
        ids, counts = np.unique(pf.device_ids, return_counts=True)
        info: dict[str, Any] = {
            "file": str(path),
            "kind": "preambles",
            "layout": pf.layout,
            "packets": len(pf),
            "devices": [int(i) for i in ids],
            "packets_per_device": {str(int(i)): int(c) for i, c in zip(ids, counts, strict=True)},
            "n_samples_per_packet": pf.n_samples_per_packet,
            "iq_dtype": str(pf.iq_dtype),
            "fs_hz": None if pf.cfg is None else pf.cfg.fs_hz,
            "lora": None if pf.cfg is None else pf.cfg.to_dict(),
            "file_bytes": path.stat().st_size,
        }
        if pf.layout == "native":
            meta = pf.meta(np.arange(len(pf))) if len(pf) else None
            info["sources"] = [s.get("name", "") for s in pf.sources]
            attrs = pf.attrs
            info["software_version"] = attrs.get("software_version")
            info["created_utc"] = attrs.get("created_utc")
            if meta is not None:
                known: dict[str, Any] = {}
                for key in ("cfo_hz", "snr_db", "capture_time_s"):
                    v = meta[key][np.isfinite(meta[key])]
                    known[key] = {"n_known": int(v.size)} | (
                        {"min": float(v.min()), "max": float(v.max())} if v.size else {})
                known["start"] = {"n_known": int(np.count_nonzero(meta["start"] >= 0))}
                info["metadata"] = known
    return info


def _recording_info(path: Path, format: str | None, fs_hz: float | None) -> dict[str, Any]:
    from lorarffi.datasets.recording import open_recording

    with open_recording(path, format=format, fs_hz=fs_hz) as rec:
        anns = rec.annotations
        devices = sorted({int(a["lorarffi:device_id"]) for a in anns if "lorarffi:device_id" in a})
        labels = sorted({str(a["core:label"]) for a in anns if "core:label" in a})
        glob = rec.metadata
        lora = {k.split(":", 1)[1]: v for k, v in glob.items() if k.startswith("lorarffi:")
                and k.split(":", 1)[1] in ("sf", "bw_hz", "preamble_symbols", "sync_word")}
        return {
            "file": str(rec.path),
            "kind": rec.kind,
            "datatype": rec.datatype,
            "fs_hz": rec.fs_hz,
            "center_freq_hz": rec.center_freq_hz,
            "n_samples": rec.n_samples,
            "duration_s": rec.duration_s,
            "start_time": None if rec.start_time is None else rec.start_time.isoformat(),
            "annotations": len(anns),
            "packets": len(anns),
            "devices": devices,
            "labels": labels[:50],
            "lora": lora or None,
            "description": glob.get("core:description"),
            "n_dropped_bytes": rec.n_dropped_bytes,
        }


def _fmt_hz(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "unknown"
    for unit, scale in (("GHz", 1e9), ("MHz", 1e6), ("kHz", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:g} {unit}"
    return f"{v:g} Hz"


def _text(info: dict[str, Any]) -> str:
    lines = [f"{info['file']}"]
    if info["kind"] == "preambles":
        note = "  (LoRa_RFFI: data [I|Q] rows, 1-based label)" if info["layout"] == "public" else ""
        lines.append(f"  layout               {info['layout']}{note}")
        lines.append(f"  packets              {info['packets']}")
        lines.append(f"  devices              {len(info['devices'])}")
        lines.append(f"  samples per packet   {info['n_samples_per_packet']} ({info['iq_dtype']})")
        lora = info.get("lora")
        if lora:
            lines.append(f"  LoRa                 SF{lora['sf']}, BW {_fmt_hz(lora['bw_hz'])}, "
                         f"fs {_fmt_hz(lora['fs_hz'])}, {lora['preamble_symbols']} preamble symbols, "
                         f"sync word 0x{lora['sync_word']:02x}")
        else:
            lines.append("  LoRa                 not stored in the file"
                         + (" (the LoRa_RFFI dataset is SF7, 125 kHz, 1 MS/s)"
                            if info["layout"] == "public" and info["n_samples_per_packet"] == 8192 else ""))
        for key, m in (info.get("metadata") or {}).items():
            rng = f", {m['min']:.6g} .. {m['max']:.6g}" if "min" in m else ""
            lines.append(f"  {key:<20} known for {m['n_known']} packets{rng}")
        if info.get("sources"):
            shown = ", ".join(info["sources"][:5]) + (" ..." if len(info["sources"]) > 5 else "")
            lines.append(f"  sources              {shown}")
        lines.append("  device  packets")
        for dev, n in info["packets_per_device"].items():
            lines.append(f"  {dev:>6}  {n:>7}")
    else:
        lines.append(f"  kind                 {info['kind']} ({info['datatype']})")
        lines.append(f"  sample rate          {_fmt_hz(info['fs_hz'])}")
        lines.append(f"  centre frequency     {_fmt_hz(info['center_freq_hz'])}")
        dur = info["duration_s"]
        lines.append(f"  samples              {info['n_samples']} ({dur:.6g} s)" if dur is not None
                     else f"  samples              {info['n_samples']}")
        if info["start_time"]:
            lines.append(f"  start time           {info['start_time']}")
        if info.get("lora"):
            lines.append(f"  LoRa                 {info['lora']}")
        lines.append(f"  annotations          {info['annotations']}")
        if info["devices"]:
            lines.append(f"  devices              {', '.join(str(d) for d in info['devices'])}")
        if info["n_dropped_bytes"]:
            lines.append(f"  dropped bytes        {info['n_dropped_bytes']} (not a whole sample at the end)")
        if info.get("description"):
            lines.append(f"  description          {info['description']}")
    return "\n".join(lines)
