"""``lora-rffi live``: detect packets in a live stream and identify their transmitters, one decision each."""

from __future__ import annotations

import argparse

from lorarffi.cli.common import add_lora_args, si_float

__all__ = ["register", "run"]


def _gain(text: str) -> float | str:
    if text.strip().lower() == "agc":
        return "agc"
    return si_float(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "live",
        help="detect and identify LoRa transmitters in a live stream",
        description="Run the live pipeline: source -> packet detection -> preamble alignment and CFO -> "
        "spectrogram -> model -> CFO-gated hybrid decision, one decision per detected packet (without "
        "--model: detection only). Sources: soapy:ARGS (a SoapySDR radio), file:PATH (raw with "
        "--format/--fs-hz, SigMF, "
        "I/Q WAV), zmq:tcp://HOST:PORT (GNU Radio ZMQ PUB sink; zmq+pull: for PUSH), sim (the built-in "
        "virtual radio). Exits at the end of a finite source, after --duration-s, or on Ctrl-C / SIGTERM, "
        "printing a summary (counts, dropped samples, latency percentiles).",
        epilog="example: lora-rffi live --source sim --model runs/model --duration-s 30 --json",
    )
    p.add_argument(
        "--source",
        default="sim",
        metavar="SPEC",
        help="soapy:ARGS | file:PATH | zmq:ENDPOINT | zmq+pull:ENDPOINT | sim (default sim)",
    )
    p.add_argument("--format", default=None, help="sample format of a raw file: cf32, ci16, cu8 or ci8")
    add_lora_args(p)
    p.add_argument(
        "-f",
        "--freq",
        dest="center_freq_hz",
        type=si_float,
        default=None,
        metavar="FREQ_HZ",
        help="centre frequency in Hz (radio: tuned; others: reported)",
    )
    p.add_argument(
        "-s",
        "--rate",
        dest="rate_hz",
        type=si_float,
        default=None,
        metavar="RATE_HZ",
        help="sample rate in Hz (radio: set; same as --fs-hz)",
    )
    p.add_argument(
        "-g",
        "--gain",
        dest="gain_db",
        type=_gain,
        default=None,
        metavar="GAIN_DB",
        help="radio gain in dB, or 'agc'",
    )
    p.add_argument("-a", "--antenna", default=None, help="radio antenna")
    p.add_argument(
        "--model", default=None, metavar="DIR", help="trained model directory (default: detection only)"
    )
    p.add_argument(
        "--publish",
        default=None,
        metavar="ENDPOINT",
        help="publish decisions as JSON on a ZeroMQ PUB socket (e.g. tcp://127.0.0.1:5556 or 5556; "
        "binds 127.0.0.1 unless an address is named)",
    )
    p.add_argument(
        "--record",
        default=None,
        metavar="OUT.sigmf-meta",
        help="record the raw IQ to SigMF with one annotation per packet",
    )
    p.add_argument(
        "--preambles",
        default=None,
        metavar="OUT.h5",
        help="append each packet's aligned preamble to a lora-rffi HDF5 file",
    )
    p.add_argument("--jsonl", default=None, metavar="FILE", help="append decisions as JSON lines to FILE")
    p.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds of signal")
    p.add_argument(
        "--json",
        action="store_true",
        help="print decisions as JSON lines on stdout, then the summary as a JSON line",
    )
    p.add_argument(
        "--no-view", action="store_true", help="no live console view (default: shown on a terminal)"
    )
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="file/sim: pace at this multiple of real time (1 = real time, 0 = as fast as possible; "
        "default: sim 1, file 0)",
    )
    p.add_argument("--realtime", action="store_true", help="file/sim: pace in real time (= --speed 1)")
    p.add_argument("--loop", action="store_true", help="file: start again at the end")
    p.add_argument("--devices", type=int, default=None, help="sim: simulated devices (default 4)")
    p.add_argument("--rogues", type=int, default=None, help="sim: extra devices outside the fleet")
    p.add_argument("--snr-db", type=float, default=None, help="sim: packet SNR in dB")
    p.add_argument("--seed", type=int, default=None, help="sim: seed of the stream")
    p.add_argument(
        "--fleet-seed",
        type=int,
        default=None,
        help="sim: seed of the devices' hardware (default 0; `lora-rffi simulate --seed S` makes the "
        "same fleet)",
    )
    p.add_argument(
        "--spread", type=float, default=None, help="sim: how much the simulated devices differ (default 1.0)"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads for the model (default 1: lowest latency)"
    )
    p.add_argument(
        "--block-s",
        type=float,
        default=0.016,
        help="detector block in seconds of signal: bounds the added latency (default 0.016)",
    )
    p.add_argument("--buffer-s", type=float, default=None, help="ring buffer length in seconds (default 2)")
    p.set_defaults(func=run)


def _lora_cfg(args: argparse.Namespace, classifier, fs_hz: float | None):
    from lorarffi.dsp.config import LoRaConfig
    from lorarffi.errors import ConfigError

    base = classifier.lora if classifier is not None else LoRaConfig()
    changes = {}
    if args.sf is not None:
        changes["sf"] = args.sf
    if args.bw_hz is not None:
        changes["bw_hz"] = args.bw_hz
    if classifier is not None:
        for name, value in changes.items():
            if value != getattr(base, name):
                raise ConfigError(
                    f"--{name.replace('_', '-')}={value:g} contradicts the model, trained for "
                    f"{name}={getattr(base, name):g}"
                )
    if fs_hz is not None:
        changes["fs_hz"] = fs_hz
    return base.replace(**changes) if changes else base


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    import sys

    from lorarffi.capture.sources import open_source
    from lorarffi.errors import ConfigError
    from lorarffi.live.pipeline import ClassifierStage, DetectionOnly, LivePipeline, stop_on_signals
    from lorarffi.live.sinks import ConsoleSink, JsonlSink, PreambleSink, SigMFSink, ZmqPublishSink

    log = logging.getLogger("lorarffi.live")
    if args.fs_hz is not None and args.rate_hz is not None and args.fs_hz != args.rate_hz:
        raise ConfigError(f"-s {args.rate_hz:g} and --fs-hz {args.fs_hz:g} disagree: give one sample rate")
    fs_hz = args.fs_hz if args.fs_hz is not None else args.rate_hz
    if args.duration_s is not None and not args.duration_s > 0:
        raise ConfigError(f"--duration-s={args.duration_s} is not valid: give a positive number of seconds")
    spec = args.source.strip()
    is_sim = spec == "sim" or spec.startswith("sim:")
    speed = 1.0 if args.realtime else args.speed
    if speed is None and is_sim:
        speed = 1.0  # the virtual radio runs in real time unless told otherwise
    if speed == 0:
        speed = None
    classifier = None
    if args.model:
        import torch

        from lorarffi.rffi.inference import load_classifier

        # One intra-op thread: a live batch is a few packets, and idle OpenMP workers spinning beside the
        # source and detector threads cost tens of ms of latency on a 2-core machine (p50 100 ms vs 22 ms).
        torch.set_num_threads(args.threads)
        classifier = load_classifier(args.model)
    opts: dict = {
        "buffer_s": args.buffer_s,
        "center_freq_hz": args.center_freq_hz,
        "fs_hz": fs_hz,
        "format": args.format,
        "gain_db": args.gain_db,
        "antenna": args.antenna,
        "speed": speed,
        "loop": args.loop or None,
        "n_devices": args.devices,
        "n_rogues": args.rogues,
        "snr_db": args.snr_db,
        "seed": args.seed,
        "fleet_seed": args.fleet_seed,
        "spread": args.spread,
    }
    if is_sim:
        opts["cfg"] = _lora_cfg(args, classifier, fs_hz)
    source = open_source(spec, **opts)
    sinks = []
    try:
        cfg = _lora_cfg(args, classifier, source.fs_hz)
        decider = ClassifierStage(classifier) if classifier is not None else DetectionOnly()
        if args.record:
            sinks.append(
                SigMFSink(
                    args.record,
                    fs_hz=source.fs_hz,
                    center_freq_hz=source.center_freq_hz,
                    cfg=cfg,
                    start_time=source.start_time,
                    description=f"lora-rffi live {source.name}",
                )
            )
        if args.preambles:
            sinks.append(
                PreambleSink(
                    args.preambles,
                    cfg.integer_oversampling(),
                    source=source.name,
                    fs_hz=source.fs_hz,
                    start_time=source.start_time,
                    provenance={"command": " ".join(sys.argv)},
                )
            )
        if args.publish:
            pub = ZmqPublishSink(args.publish)
            log.info("publishing decisions on %s", pub.endpoint)
            sinks.append(pub)
        if args.jsonl:
            sinks.append(JsonlSink(args.jsonl))
        if args.json:
            sinks.append(JsonlSink(sys.stdout))
        elif not args.no_view and not args.quiet and sys.stderr.isatty():
            sinks.append(ConsoleSink(f"lora-rffi live: {source.name}"))
        else:
            sinks.append(_TextSink())
        pipeline = LivePipeline(
            source, cfg, decider=decider, sinks=sinks, duration_s=args.duration_s, block_s=args.block_s
        )
    except BaseException:
        source.close()
        for sink in sinks:
            sink.close(None)
        raise
    with stop_on_signals(source):
        summary = pipeline.run()
    if args.json:
        print(json.dumps({"summary": _finite(summary.to_dict())}), flush=True)
    else:
        print(summary.format(), flush=True)
    return 0


def _finite(obj):
    """JSON-safe copy: non-finite floats become None (JSON has no NaN)."""
    import math

    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class _TextSink:
    """One human-readable line per decision on stdout."""

    def on_samples(self, start, iq) -> None:  # noqa: D102
        pass

    def on_decisions(self, records, packets) -> None:  # noqa: D102
        for r in records:
            who = "-" if r["device"] is None else ("unknown" if r["device"] < 0 else f"device {r['device']}")
            print(
                f"t={r['time_s']:10.4f} s  start={r['start']:>11}  {r['verdict']:<8} {who:<11} "
                f"cfo={r['cfo_hz']:+9.1f} Hz  snr={r['snr_db']:5.1f} dB  latency={r['latency_ms']:6.1f} ms",
                flush=True,
            )

    def on_progress(self, status) -> None:  # noqa: D102
        pass

    def close(self, summary=None) -> None:  # noqa: D102
        pass
