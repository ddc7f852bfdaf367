"""``lora-rffi capture``: record a SoapySDR receiver to SigMF (flags after rx_sdr / soapy_power)."""

from __future__ import annotations

import argparse

from lorarffi.cli.common import si_float

__all__ = ["register", "run"]


def _gain(text: str) -> float | str:
    if text.strip().lower() == "agc":
        return "agc"
    return si_float(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "capture",
        help="record IQ from a SoapySDR device to SigMF",
        description="Record IQ samples from a SoapySDR device (a USRP, an RTL-SDR, or the project's 'replay' "
        "module) to a SigMF recording. Data is flushed in blocks; the metadata is written atomically. Stops "
        "after --duration-s, at the end of a replayed file, or on Ctrl-C / SIGTERM. Samples the device lost "
        "(overflows) are written as zeros so the file's sample positions stay those of the stream; the count "
        "is printed.",
        epilog="example: lora-rffi capture --args driver=uhd -f 868.1M -s 1M -g 30 --duration-s 60 "
        "-o out/cap.sigmf-meta",
    )
    p.add_argument(
        "--args",
        "-d",
        dest="device_args",
        required=True,
        metavar="ARGS",
        help="SoapySDR device arguments, e.g. driver=uhd,serial=30F1 or driver=replay,file=x.sigmf-meta",
    )
    p.add_argument(
        "-f",
        "--freq",
        dest="center_freq_hz",
        type=si_float,
        required=True,
        metavar="FREQ_HZ",
        help="centre frequency in Hz (suffixes k/M/G)",
    )
    p.add_argument(
        "-s",
        "--rate",
        dest="fs_hz",
        type=si_float,
        required=True,
        metavar="RATE_HZ",
        help="sample rate in Hz (suffixes k/M)",
    )
    p.add_argument(
        "-g",
        "--gain",
        dest="gain_db",
        type=_gain,
        default=None,
        metavar="GAIN_DB",
        help="overall gain in dB, or 'agc' (default: the device's)",
    )
    p.add_argument("-a", "--antenna", default=None, help="antenna name (e.g. RX2)")
    p.add_argument("-w", "--bandwidth-hz", type=si_float, default=None, help="analog bandwidth in Hz")
    p.add_argument("-c", "--channel", type=int, default=0, help="receive channel (default 0)")
    p.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="seconds of signal to record (default: until the stream ends or Ctrl-C)",
    )
    p.add_argument(
        "--buffer-s", type=float, default=2.0, help="ring buffer between reader and writer, seconds"
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT.sigmf-meta", help="SigMF recording to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from lorarffi.capture.soapy import SoapySource
    from lorarffi.errors import ConfigError
    from lorarffi.live.pipeline import stop_on_signals
    from lorarffi.live.sinks import SigMFSink

    log = logging.getLogger("lorarffi.capture")
    if args.duration_s is not None and not args.duration_s > 0:
        raise ConfigError(f"--duration-s={args.duration_s} is not valid: give a positive number of seconds")
    source = SoapySource(
        args.device_args,
        fs_hz=args.fs_hz,
        center_freq_hz=args.center_freq_hz,
        gain_db=args.gain_db,
        antenna=args.antenna,
        bandwidth_hz=args.bandwidth_hz,
        channel=args.channel,
        buffer_s=args.buffer_s,
    )
    limit = None if args.duration_s is None else int(round(args.duration_s * source.fs_hz))
    written = 0
    first = None
    try:
        sink = SigMFSink(
            args.output,
            fs_hz=source.fs_hz,
            center_freq_hz=source.center_freq_hz,
            description=f"lora-rffi capture {source.name}",
            hw=source.hardware_key,
        )
    except BaseException:
        source.close()
        raise
    try:
        with stop_on_signals(source):
            for start, iq in source:
                if first is None:
                    first = start
                if limit is not None:
                    iq = iq[: max(0, limit - (start - first))]
                sink.on_samples(start, iq)
                written = start - first + iq.shape[0]
                if limit is not None and written >= limit:
                    break
    finally:
        source.close()
        stats = source.stats()
        sink.close(stats.to_dict())
    log.info(
        "%s: %d overflows, %d samples lost, %d timeouts",
        source.name,
        stats.n_overflows,
        stats.n_lost_samples,
        stats.n_timeouts,
    )
    print(
        f"{args.output}: {written} samples at {source.fs_hz:g} Hz ({written / source.fs_hz:.3f} s); "
        f"lost {stats.n_lost_samples} in {stats.n_overflows} overflow(s)"
    )
    return 0
