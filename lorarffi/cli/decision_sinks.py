"""The decision outputs `live` and `worker` share: their flags and the sinks they make.

``--publish`` (ZeroMQ PUB, alerts once more under the topic ``alert``), ``--mqtt``/``--mqtt-queue`` (MQTT
decisions and alerts), ``--jsonl`` (JSON Lines after a run marker) and ``--json`` (the same on stdout).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

__all__ = ["add_decision_sink_args", "decision_sinks"]

log = logging.getLogger(__name__)


def add_decision_sink_args(p: argparse.ArgumentParser) -> None:
    """``--publish``, ``--mqtt``, ``--mqtt-queue`` and ``--jsonl``."""
    p.add_argument(
        "--publish",
        default=None,
        metavar="ENDPOINT",
        help="publish decisions as JSON on a ZeroMQ PUB socket, alerts once more under the topic 'alert' "
        "(e.g. tcp://127.0.0.1:5556 or 5556; binds 127.0.0.1 unless an address is named)",
    )
    p.add_argument(
        "--mqtt",
        default=None,
        metavar="URL",
        help="publish decisions to PREFIX/decision and alerts to PREFIX/alert on an MQTT broker, JSON with "
        "QoS 1 (mqtt://HOST:PORT/PREFIX, e.g. mqtt://127.0.0.1:1883/lorarffi); reconnects by itself",
    )
    p.add_argument(
        "--mqtt-queue",
        type=int,
        default=10_000,
        metavar="N",
        help="MQTT messages held while the broker is unreachable; more are dropped and counted "
        "(default 10000)",
    )
    p.add_argument(
        "--jsonl",
        default=None,
        metavar="FILE",
        help="append decisions as JSON lines to FILE, each run after a marker line (run id, time, command)",
    )


def decision_sinks(args: argparse.Namespace, source: str, *, json_stdout: bool) -> list[Any]:
    """The sinks the flags of :func:`add_decision_sink_args` ask for (and stdout JSON Lines when
    ``json_stdout``), named after ``source`` where a sink reports it. The caller closes them."""
    from lorarffi.live.sinks import JsonlSink, ZmqPublishSink, run_record

    sinks: list[Any] = []
    try:
        if args.publish:
            pub = ZmqPublishSink(args.publish)
            log.info("publishing decisions on %s", pub.endpoint)
            sinks.append(pub)
        if args.mqtt:
            from lorarffi.live.mqtt_sink import MqttSink

            sinks.append(MqttSink(args.mqtt, queue_size=args.mqtt_queue, source=source))
        if args.jsonl:
            sinks.append(JsonlSink(args.jsonl, run=run_record(getattr(args, "command_line", sys.argv))))
        if json_stdout:
            sinks.append(JsonlSink(sys.stdout))
    except BaseException:
        for sink in sinks:
            sink.close(None)
        raise
    return sinks
