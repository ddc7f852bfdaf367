"""``lora-rffi live``: detect packets in a live stream and identify their transmitters, one decision each."""

from __future__ import annotations

import argparse

from lorarffi.cli.common import (
    add_channel_plan_args,
    add_lora_args,
    add_n_devices_arg,
    add_radio_args,
    add_receiver_offset_arg,
    int_range,
    positive_float,
    positive_int,
)
from lorarffi.cli.decision_sinks import add_decision_sink_args

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "add_arguments", "run"]

HELP = "detect and identify LoRa transmitters in a live stream"
DESCRIPTION = (
    "Run the live pipeline: source -> packet detection -> preamble alignment and CFO -> spectrogram -> model "
    "-> CFO-gated hybrid decision, one decision per detected packet (without --model: detection only). "
    "Sources: soapy:ARGS (a SoapySDR radio), file:PATH (raw with --format/--fs-hz, SigMF, I/Q WAV), "
    "zmq:tcp://HOST:PORT (GNU Radio ZMQ PUB sink; zmq+pull: for PUSH), sim (the built-in virtual radio). "
    "Exits at the end of a finite source, after --duration-s, or on Ctrl-C / SIGTERM, printing a summary "
    "(counts, dropped samples and whether every loss was observable, latency percentiles, what network "
    "sinks delivered). Decisions can go to JSONL, a ZeroMQ PUB socket (--publish) and an MQTT broker "
    "(--mqtt)."
)
EPILOG = "example: lora-rffi live --source sim --model runs/model --duration-s 30 --json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source",
        default="sim",
        metavar="SPEC",
        help="soapy:ARGS | file:PATH | zmq:ENDPOINT | zmq+pull:ENDPOINT | sim (default sim)",
    )
    p.add_argument("--format", default=None, help="sample format of a raw file: cf32, ci16, cu8 or ci8")
    add_lora_args(p)
    add_radio_args(p, radio_only=False)
    add_channel_plan_args(p)
    p.add_argument(
        "--model",
        default=None,
        action=RepeatableOption,
        metavar="DIR",
        help="trained model directory (default: detection only); repeat it for models of other spreading "
        "factors or bandwidths: with --channels or several --sf each packet goes to the model of its SF and "
        "bandwidth, the others are 'unsupported'",
    )
    p.add_argument(
        "--registry",
        default=None,
        action=RepeatableOption,
        metavar="REG",
        help="decide against this device registry (SQLite file or database URL) enrolled with --model: each "
        "packet an enrolled device id or 'rogue', every decision appended to its audit log (default: the "
        "model's closed-set classes); with several --model, one --registry per model in the same order",
    )
    p.add_argument(
        "--no-drift-tracking",
        action="store_true",
        help="leave the devices' CFO statistics as they are (default: confidently accepted packets track "
        "their device's CFO drift, stored in the registry with --registry)",
    )
    p.add_argument(
        "--min-snr-db",
        type=float,
        default=None,
        metavar="DB",
        help="with --registry: a packet rejected below this SNR is 'unknown' (too weak to judge, not "
        "alerted), not 'rogue' (default: none)",
    )
    add_decision_sink_args(p)
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
    p.add_argument(
        "--detect-only",
        action="store_true",
        help="no model: report (and queue) every detected packet; what a capture node of a scale-out runs",
    )
    p.add_argument(
        "--queue",
        default=None,
        metavar="URL",
        help="append every detected packet to a Redis stream for `lora-rffi worker` "
        "(redis://HOST:PORT/STREAM, rediss:// for TLS; password from LORA_RFFI_REDIS_PASSWORD(_FILE))",
    )
    p.add_argument("--node-id", default=None, metavar="NAME", help="this capture node's name (default: host)")
    p.add_argument(
        "--queue-with-cfo",
        action="store_true",
        help="also queue each window as received (for workers whose model was trained without CFO "
        "compensation; doubles the message size)",
    )
    p.add_argument(
        "--queue-maxlen",
        type=int,
        default=2_000,
        metavar="N",
        help="length cap of the stream (MAXLEN ~); entries it removes undecided are counted (default 2000)",
    )
    p.add_argument(
        "--queue-buffer",
        type=int,
        default=1_000,
        metavar="N",
        help="packets held while Redis is unreachable; more are dropped and counted (default 1000)",
    )
    p.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds of signal")
    p.add_argument(
        "--timeout-s",
        type=positive_float,
        default=None,
        help="stop after this many seconds of wall time, whatever arrived; an error if the source delivered "
        "nothing by then (e.g. a ZMQ sender that never connects) (default: no limit)",
    )
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
    add_n_devices_arg(p, help="sim: simulated devices (default 4)")
    p.add_argument("--rogues", type=int, default=None, help="sim: extra devices outside the fleet")
    p.add_argument(
        "--rogues-tuned-to",
        type=int_range,
        default=None,
        metavar="IDS",
        help="sim: one more rogue per listed fleet device (e.g. 1 or 1,3), its carrier tuned to that "
        "device's CFO: an attacker the CFO gate alone cannot stop (default none)",
    )
    p.add_argument(
        "--sim-truth",
        default=None,
        metavar="FILE.jsonl",
        help="sim: write what was transmitted (start sample, device, rogue or not, CFO, SNR), one JSON line "
        "per packet, to FILE when the run ends: the ground truth to score the decisions against",
    )
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
        "--threads",
        type=positive_int,
        default=1,
        help="torch threads for the model (default 1: lowest latency)",
    )
    p.add_argument(
        "--block-s",
        type=float,
        default=0.016,
        help="detector block in seconds of signal: bounds the added latency (default 0.016)",
    )
    p.add_argument("--buffer-s", type=float, default=None, help="ring buffer length in seconds (default 2)")
    add_receiver_offset_arg(p)


def _gateway_plan(args: argparse.Namespace, source_center_hz: float | None, model_fs_hz: float | None,
                  fs_hz: float, sfs: tuple[int, ...]):
    """The listening plan of ``--channels`` / several ``--sf``; None for one channel at one SF."""
    from lorarffi.cli.common import si_float
    from lorarffi.errors import ConfigError
    from lorarffi.live.gateway import GatewayPlan

    if args.channels is None and len(sfs) < 2:
        return None
    center_hz = args.center_freq_hz if args.center_freq_hz is not None else source_center_hz
    if center_hz is None:
        raise ConfigError("--channels and several --sf need the capture's centre frequency: give -f")
    try:
        channels = (
            tuple(si_float(v.strip()) for v in args.channels.split(",") if v.strip())
            if args.channels is not None
            else (float(center_hz),)
        )
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"--channels={args.channels!r}: {exc}") from None
    decimation = None
    if model_fs_hz is not None:  # the fingerprint windows at the model's rate
        ratio = fs_hz / model_fs_hz
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ConfigError(
                f"the capture's {fs_hz:g} S/s is not an integer multiple of the model's {model_fs_hz:g} S/s: "
                "the channels cannot be delivered at the model's rate"
            )
        decimation = int(round(ratio))
    return GatewayPlan(float(center_hz), channels, sfs, decimation)


class RepeatableOption(argparse.Action):
    """An option given once or more: a list of its values. A default (from the config file or the environment:
    one value, as the option takes it) stands until the option is given; the first use replaces it, later
    uses add to it."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        current = getattr(namespace, self.dest, None)
        if not isinstance(current, list) or current is parser.get_default(self.dest):
            setattr(namespace, self.dest, [values])
        else:
            current.append(values)


def _as_list(value) -> list:
    """A :class:`RepeatableOption`'s value as a list (a default is one value)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _deciders_by_configuration(
    models: list[str], classifiers: list, stages: list, sfs: tuple[int, ...]
) -> dict:
    """Each model's decision stage keyed by its (SF, bandwidth); the models must differ in that, share one
    sample rate (the channels are delivered at it) and have their SFs among the plan's ``sfs``."""
    from lorarffi.errors import ConfigError

    missing = sorted({int(c.lora.sf) for c in classifiers} - set(sfs))
    if missing:
        raise ConfigError(f"--sf leaves out the spreading factors of some --model: add {missing}")
    deciders: dict = {}
    for path, c, stage in zip(models, classifiers, stages, strict=True):
        key = (int(c.lora.sf), float(c.lora.bw_hz))
        if key in deciders:
            raise ConfigError(f"--model {path}: another --model already decides SF{key[0]} at {key[1]:g} Hz")
        if c.lora.fs_hz != classifiers[0].lora.fs_hz:
            raise ConfigError(f"--model {path} was trained at {c.lora.fs_hz:g} S/s, --model {models[0]} at "
                              f"{classifiers[0].lora.fs_hz:g} S/s: the channels are delivered at one rate")
        deciders[key] = stage
    return deciders


def run(args: argparse.Namespace) -> int:
    import sys

    from lorarffi.capture.sources import open_source
    from lorarffi.cli.common import lora_config, sample_rate_hz
    from lorarffi.cli.decision_sinks import decision_sinks
    from lorarffi.errors import ConfigError
    from lorarffi.live.console import ConsoleSink, TextSink
    from lorarffi.live.gateway import parse_sfs
    from lorarffi.live.pipeline import LivePipeline
    from lorarffi.live.sinks import PreambleSink, SigMFSink
    from lorarffi.live.stages import ClassifierStage, DetectionOnly, warm_up
    from lorarffi.live.stopping import stop_after, stop_on_signals
    from lorarffi.live.truth import write_truth

    fs_hz = sample_rate_hz(args)
    sfs = parse_sfs(args.sf) if args.sf is not None else ()
    args.sf = sfs[0] if len(sfs) == 1 else None  # one SF: as before; several: the plan's
    if args.preambles and (args.channels is not None or len(sfs) > 1):
        raise ConfigError(
            "--preambles writes one SF at one rate: it is not available with --channels or several --sf"
        )
    if args.duration_s is not None and not args.duration_s > 0:
        raise ConfigError(f"--duration-s={args.duration_s} is not valid: give a positive number of seconds")
    spec = args.source.strip()
    is_sim = spec == "sim" or spec.startswith("sim:")
    speed = 1.0 if args.realtime else args.speed
    if not is_sim and (args.sim_truth or args.rogues_tuned_to):
        raise ConfigError("--sim-truth and --rogues-tuned-to need the simulated radio (--source sim)")
    if speed is None and is_sim:
        speed = 1.0  # the virtual radio runs in real time unless told otherwise
    if speed == 0:
        speed = None
    classifier = None
    registry_stages: list = []
    models = _as_list(args.model)
    registries = _as_list(args.registry)
    if registries and not models:
        raise ConfigError("--registry needs --model: the model the registry was enrolled with")
    if registries and len(registries) != len(models):
        raise ConfigError("give --registry once per --model, in the same order: the registry each model was "
                          "enrolled with")
    if len(models) > 1 and args.channels is None and len(sfs) < 2:
        raise ConfigError(
            "several --model need a gateway plan: list their spreading factors in --sf (or give --channels)"
        )
    if args.min_snr_db is not None and not registries:
        raise ConfigError("--min-snr-db needs --registry: only a registry calls packets rogue")
    if args.detect_only and models:
        raise ConfigError("--detect-only decides nothing: leave out --model (workers decide, with theirs)")
    stages: list = []
    try:
        if models:
            import torch

            from lorarffi.rffi.inference import load_classifier

            # One intra-op thread by default: a live batch is a few packets, and idle OpenMP workers spinning
            # beside the source and detector threads add latency on a machine with few cores.
            torch.set_num_threads(args.threads)
            if registries:
                from lorarffi.live.stages import RegistryStage

                for model, registry in zip(models, registries, strict=True):
                    registry_stages.append(RegistryStage.from_paths(
                        model, registry, track=not args.no_drift_tracking, min_snr_db=args.min_snr_db
                    ))  # fmt: skip
                stages = list(registry_stages)
                classifiers = [st.embedder for st in registry_stages]
            else:
                classifiers = [load_classifier(m) for m in models]
                stages = [ClassifierStage(c, track=not args.no_drift_tracking) for c in classifiers]
            classifier = classifiers[0]
            if args.receiver_offset_ppm is not None:
                for c in registry_stages or classifiers:
                    c.set_receiver_offset_ppm(args.receiver_offset_ppm)
        decider = stages[0] if stages else DetectionOnly()
        deciders = (
            _deciders_by_configuration(models, classifiers, stages, sfs or (classifiers[0].lora.sf,))
            if len(models) > 1
            else None
        )
        # before the source connects: the first packets do not wait for the network's setup
        for stage in stages:
            warm_up(stage)
    except BaseException:
        for st in registry_stages:
            st.close()
        raise
    # the LoRa parameters: the model's, or the flags'; the rate is the source's once it is open
    trained = classifier.lora if classifier is not None else None
    lora = lora_config(args, trained, trained=trained is not None)
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
        "tuned_rogues": args.rogues_tuned_to,
        "snr_db": args.snr_db,
        "seed": args.seed,
        "fleet_seed": args.fleet_seed,
        "spread": args.spread,
    }
    if is_sim:
        opts["cfg"] = lora
    try:
        source = open_source(spec, **opts)
    except BaseException:
        for st in registry_stages:
            st.close()
        raise
    sinks = []
    try:
        cfg = lora.replace(fs_hz=source.fs_hz)
        gateway = _gateway_plan(
            args,
            source.center_freq_hz,
            classifier.lora.fs_hz if classifier is not None else None,
            source.fs_hz,
            sfs or (cfg.sf,),
        )
        for st in registry_stages:
            st.source = source.name
        if args.record:
            from lorarffi.datasets.sigmf_io import SigMFRecorder

            recorder = SigMFRecorder(
                args.record,
                fs_hz=source.fs_hz,
                center_freq_hz=source.center_freq_hz,
                cfg=cfg,
                start_time=source.start_time,
                description=f"lora-rffi live {source.name}",
            )
            sinks.append(SigMFSink(recorder))
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
        sinks += decision_sinks(args, source.name, json_stdout=args.json)
        if args.queue:
            import socket

            from lorarffi.live.queue_sink import QueueSink

            sinks.append(
                QueueSink(args.queue, node_id=args.node_id or socket.gethostname(), cfg=cfg,
                          center_freq_hz=source.center_freq_hz, start_time=source.start_time,
                          maxlen=args.queue_maxlen, buffer_size=args.queue_buffer,
                          with_cfo=args.queue_with_cfo)
            )  # fmt: skip
        if args.json:
            pass  # decisions already go to stdout as JSON Lines
        elif not args.no_view and not args.quiet and sys.stderr.isatty():
            sinks.append(ConsoleSink(f"lora-rffi live: {source.name}"))
        else:
            sinks.append(TextSink())
        pipeline = LivePipeline(
            source, cfg, decider=decider, sinks=sinks, duration_s=args.duration_s, block_s=args.block_s,
            gateway=gateway, deciders=deciders,
        )
    except BaseException:
        source.close()
        for sink in sinks:
            sink.close(None)
        for st in registry_stages:
            st.close()
        raise
    try:
        with stop_on_signals(source), stop_after(source, args.timeout_s) as timed_out:
            summary = pipeline.run()
        if timed_out.is_set() and summary.n_samples == 0:
            from lorarffi.errors import CaptureError

            waiting = getattr(source, "waiting_for", "samples")
            raise CaptureError(
                f"{source.name}: nothing arrived within --timeout-s {args.timeout_s:g}: waited for {waiting}"
            )
    finally:
        for st in registry_stages:
            st.close()
    if args.sim_truth:
        write_truth(args.sim_truth, source, n_samples=summary.n_samples)
    print(summary.to_json() if args.json else summary.format(), flush=True)
    return 0
