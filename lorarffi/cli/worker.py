"""``lora-rffi worker``: decide the packets capture nodes put on a Redis stream, store and publish the
decisions."""

from __future__ import annotations

import argparse

from lorarffi.cli.decision_sinks import add_decision_sink_args

__all__ = ["HELP", "DESCRIPTION", "EPILOG", "add_arguments", "run"]

HELP = "decide the packets of a Redis work queue (scale-out classifier worker)"
DESCRIPTION = (
    "Read the packets capture nodes (`lora-rffi live --detect-only --queue URL --node-id NAME`) append to a "
    "Redis stream, as one consumer of its group: decide them in batches with the model (against --registry: "
    "an enrolled device or a rogue, every decision in the registry's audit log once, under the packet's "
    "NODE/RUN/START; without: the closed-set classifier), then acknowledge them. Entries a dead worker left "
    "pending are claimed after --claim-idle-s; what cannot be decided becomes a loss record. Runs until "
    "Ctrl-C / SIGTERM (or --idle-exit-s), then prints a summary. Any number of workers, on any machines, "
    "share a stream and a registry (postgresql://...)."
)
EPILOG = (
    "example: lora-rffi worker --queue redis://127.0.0.1:6379/lorarffi --model runs/extractor "
    "--registry postgresql://lorarffi@db.lan/registry --json"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--queue",
        required=True,
        metavar="URL",
        help="redis://HOST:PORT/STREAM[?group=NAME] (rediss:// for TLS; password from the URL or "
        "LORA_RFFI_REDIS_PASSWORD / LORA_RFFI_REDIS_PASSWORD_FILE)",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="trained model directory")
    p.add_argument(
        "--registry",
        default=None,
        metavar="URL",
        help="device registry enrolled with --model (SQLite file or postgresql://...; password from "
        "PGPASSWORD or PGPASSFILE): decisions against it, each logged once in its audit log",
    )
    p.add_argument("--consumer", default=None, metavar="NAME", help="name in the group (default HOST-PID)")
    p.add_argument("--batch", type=int, default=32, metavar="N", help="most packets per batch (default 32)")
    p.add_argument(
        "--max-wait-s",
        type=float,
        default=0.02,
        help="longest wait for a batch to fill after its first packet, s (default 0.02)",
    )
    p.add_argument(
        "--claim-idle-s",
        type=float,
        default=30.0,
        help="claim entries another worker left pending this long, s (default 30)",
    )
    p.add_argument(
        "--idle-exit-s",
        type=float,
        default=None,
        help="exit once the stream has been empty this long, s (default: run until stopped)",
    )
    add_decision_sink_args(p)
    p.add_argument("--json", action="store_true", help="decisions as JSON lines on stdout, then the summary")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the model (default 1)")
    p.add_argument(
        "--no-drift-tracking",
        action="store_true",
        help="decide every packet from the stored CFO statistics (no drift tracking)",
    )


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    # A stop asked for while the model loads stops the worker as soon as it exists (a summary, exit 0).
    stop_asked = threading.Event()
    running: list = []

    def on_signal(*_) -> None:
        stop_asked.set()
        for w in running:
            w.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args, stop_asked, running)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(args: argparse.Namespace, stop_asked, running: list) -> int:
    import json
    import logging

    import torch

    from lorarffi.cli.decision_sinks import decision_sinks
    from lorarffi.errors import ConfigError
    from lorarffi.live.stages import ClassifierStage, RegistryStage
    from lorarffi.live.worker import QueueWorker
    from lorarffi.rffi.inference import load_classifier

    log = logging.getLogger("lorarffi.worker")
    for name in ("batch", "threads"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name}={getattr(args, name)} is not valid: give 1 or more")
    torch.set_num_threads(args.threads)
    track = not args.no_drift_tracking
    if args.registry:
        stage = RegistryStage.from_paths(args.model, args.registry, track=track)
    else:
        stage = ClassifierStage(load_classifier(args.model), track=track)
    sinks = []
    try:
        sinks += decision_sinks(args, args.queue, json_stdout=args.json)
        worker = QueueWorker(
            args.queue,
            stage,
            consumer=args.consumer,
            sinks=sinks,
            batch_size=args.batch,
            max_wait_s=args.max_wait_s,
            claim_idle_s=args.claim_idle_s,
        )
    except BaseException:
        for sink in sinks:
            sink.close(None)
        if hasattr(stage, "close"):
            stage.close()
        raise
    log.info("worker %s on %s", worker.consumer, worker.url)
    running.append(worker)
    if stop_asked.is_set():
        worker.stop()
    try:
        summary = worker.run(idle_exit_s=args.idle_exit_s)
    finally:
        if hasattr(stage, "close"):
            stage.close()
    d = summary.to_dict()
    if args.json:
        print(json.dumps({"summary": d}), flush=True)
    else:
        print(
            f"worker {d['consumer']} on {d['stream']}: {d['n_entries']} entries, "
            f"{d['n_decisions']} decisions, "
            f"{d['n_claimed']} claimed, {d['n_lost']} loss records, {d['n_retries']} retries; "
            f"verdicts {d['verdicts']}; latency p99 {d['latency_ms'].get('p99')} ms",
            flush=True,
        )
    return 0
