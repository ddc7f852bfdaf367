"""``lora-rffi capture``: record a SoapySDR receiver to SigMF (flags after rx_sdr / soapy_power)."""

from __future__ import annotations

import argparse

from lorarffi.cli.common import (
    add_flag,
    add_json_arg,
    add_radio_args,
    positive_float,
    print_json,
    si_float,
)

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "add_arguments", "run"]

HELP = "record IQ from a SoapySDR device to SigMF"
DESCRIPTION = (
    "Record the raw IQ samples of a software-defined radio reached through SoapySDR (a USRP, an RTL-SDR, or "
    "the project's 'replay' module) to a SigMF recording: NAME.sigmf-data holds the samples, "
    "NAME.sigmf-meta the rate, frequency and time. Data is flushed in blocks; the metadata is written "
    "atomically. Stops after --duration-s, at the end of a replayed file, or on Ctrl-C / SIGTERM (the "
    "recording so far is kept and valid). Samples the device lost (overflows) are written as zeros so the "
    "file's sample positions stay those of the stream; the count is printed."
)
EPILOG = (
    "example: lora-rffi capture --args driver=uhd -f 868.1M -s 1M -g 30 --duration-s 60 -o out/cap.sigmf-meta"
)
_SIGMF_SUFFIXES = ("", ".sigmf-meta", ".sigmf-data")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--args",
        "-d",
        dest="device_args",
        required=True,
        metavar="ARGS",
        help="SoapySDR device arguments, e.g. driver=uhd,serial=30F1 or driver=replay,file=x.sigmf-meta",
    )
    add_radio_args(p, radio_only=True)
    add_flag(
        p,
        "-w",
        "--analog-bw-hz",
        deprecated=("--bandwidth-hz",),
        dest="bandwidth_hz",
        type=si_float,
        default=None,
        metavar="HZ",
        help="the radio's analog filter bandwidth in Hz, not the LoRa bandwidth (default: the device's)",
    )
    p.add_argument("-c", "--channel", type=int, default=0, help="receive channel (default 0)")
    p.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="seconds of signal to record (default: until the stream ends or Ctrl-C)",
    )
    p.add_argument(
        "--buffer-s",
        type=positive_float,
        default=2.0,
        help="ring buffer between reader and writer, seconds (default 2)",
    )
    add_flag(
        p,
        "-o",
        "--out",
        deprecated=("--output",),
        required=True,
        metavar="OUT.sigmf-meta",
        help="SigMF recording to write: NAME.sigmf-meta (NAME.sigmf-data is written beside it)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the recording if it exists")
    add_json_arg(p)


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from lorarffi.capture.soapy import SoapySource
    from lorarffi.cli.common import check_output, sample_rate_hz
    from lorarffi.datasets.sigmf_io import SigMFRecorder, sigmf_paths
    from lorarffi.errors import ConfigError
    from lorarffi.live.sinks import SigMFSink
    from lorarffi.live.stopping import chunks_within, stop_on_signals

    log = logging.getLogger("lorarffi.capture")
    if args.duration_s is not None and not args.duration_s > 0:
        raise ConfigError(f"--duration-s={args.duration_s} is not valid: give a positive number of seconds")
    out = Path(args.out)
    if out.suffix not in _SIGMF_SUFFIXES:
        raise ConfigError(
            f"{out}: capture writes a SigMF recording (NAME.sigmf-meta and NAME.sigmf-data), not a "
            f"{out.suffix} file: give -o {out.with_suffix('.sigmf-meta')}"
        )
    meta_path, data_path, _ = sigmf_paths(out)
    for path in (meta_path, data_path):
        check_output(path, overwrite=args.overwrite, flag="-o/--out")
    source = SoapySource(
        args.device_args,
        fs_hz=sample_rate_hz(args),
        center_freq_hz=args.center_freq_hz,
        gain_db=args.gain_db,
        antenna=args.antenna,
        bandwidth_hz=args.bandwidth_hz,
        channel=args.channel,
        buffer_s=args.buffer_s,
    )
    written = 0
    first = None
    try:
        recorder = SigMFRecorder(
            meta_path,
            overwrite=args.overwrite,
            fs_hz=source.fs_hz,
            center_freq_hz=source.center_freq_hz,
            description=f"lora-rffi capture {source.name}",
            hw=source.hardware_key,
        )
    except BaseException:
        source.close()
        raise
    sink = SigMFSink(recorder)
    try:
        with stop_on_signals(source):
            for start, iq in chunks_within(source, args.duration_s):
                if first is None:
                    first = start
                sink.on_samples(start, iq)
                written = start - first + iq.shape[0]
    finally:
        source.close()
        sink.close()
    stats = source.stats()
    log.info(
        "%s: %d overflows, %d samples lost, %d timeouts",
        source.name,
        stats.n_overflows,
        stats.n_lost_samples,
        stats.n_timeouts,
    )
    if args.json:
        print_json(
            {
                "type": "summary",
                "file": str(meta_path),
                "n_samples": written,
                "fs_hz": source.fs_hz,
                "duration_s": written / source.fs_hz,
                "n_lost_samples": stats.n_lost_samples,
                "n_overflows": stats.n_overflows,
            }
        )
        return 0
    print(
        f"{meta_path}: {written} samples at {source.fs_hz:g} Hz ({written / source.fs_hz:.3f} s); "
        f"lost {stats.n_lost_samples} in {stats.n_overflows} overflow(s)"
    )
    return 0
