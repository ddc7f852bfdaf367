"""Publish live decisions and alerts to an MQTT broker (``--mqtt mqtt://HOST:PORT/PREFIX``).

Every decision goes to ``PREFIX/decision`` and every alert (:attr:`~lorarffi.live.decision.DecisionRecord.
is_alert`) to ``PREFIX/alert`` as JSON with QoS 1, through paho-mqtt's client in its own network thread.
The client reconnects by itself when the broker goes away; messages published meanwhile wait in a bounded
in-memory queue and go out on reconnection. A message that finds the queue full is dropped and counted; the
counts go to the run summary and the log, and each message's per-topic ``seq`` shows subscribers the gap.

Payload, schema version :data:`MQTT_SCHEMA_VERSION` (one compact JSON object, UTF-8)::

    {"schema_version": 1, "kind": "decision" | "alert", "run": "<32 hex digits>", "seq": 0,
     "source": "sim", "published_utc": "2025-01-31T12:00:00.123Z", "decision": {...}}

``decision`` is the record's JSON (the JSONL line, :meth:`~lorarffi.live.decision.DecisionRecord.to_dict`);
``seq`` counts from 0 per topic and run; ``run`` is new for each run. QoS 1 delivers at least once: a
message in flight when the connection broke is sent again, so a subscriber may see a ``(run, seq)`` twice.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from lorarffi.errors import ConfigError
from lorarffi.live.decision import DecisionRecord
from lorarffi.live.sinks import Sink
from lorarffi.live.summary import LiveSummary

__all__ = ["MQTT_SCHEMA_VERSION", "MqttUrl", "parse_mqtt_url", "mqtt_payload", "MqttSink"]

log = logging.getLogger(__name__)

MQTT_SCHEMA_VERSION = 1
"""Version of the payload schema; raised when a field changes meaning or goes away (not when one is added)."""
DEFAULT_PORT = 1883
DEFAULT_PREFIX = "lorarffi"
KINDS = ("decision", "alert")


@dataclasses.dataclass(frozen=True)
class MqttUrl:
    """A broker address and topic prefix: ``mqtt://HOST:PORT/PREFIX``."""

    host: str
    port: int
    prefix: str

    def topic(self, kind: str) -> str:
        """``PREFIX/decision`` or ``PREFIX/alert``."""
        return f"{self.prefix}/{kind}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}/{self.prefix}"


def parse_mqtt_url(text: str) -> MqttUrl:
    """``mqtt://HOST[:PORT][/PREFIX]`` -> :class:`MqttUrl` (port 1883, prefix ``lorarffi`` by default).

    The prefix may have several levels (``site/gw1``) but no wildcards (``+``, ``#``).

    Examples
    --------
    >>> parse_mqtt_url("mqtt://127.0.0.1:1884/site/gw1")
    MqttUrl(host='127.0.0.1', port=1884, prefix='site/gw1')
    >>> str(parse_mqtt_url("mqtt://broker.lan"))
    'mqtt://broker.lan:1883/lorarffi'
    """
    usage = "use mqtt://HOST:PORT/PREFIX (e.g. mqtt://127.0.0.1:1883/lorarffi)"
    parts = urlsplit(text.strip())
    if parts.scheme != "mqtt":
        raise ConfigError(f"MQTT URL {text!r} is not valid: {usage} (TLS, mqtts://, is not supported)")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"MQTT URL {text!r}: credentials in the URL are not supported")
    if parts.query or "#" in text:
        raise ConfigError(f"MQTT URL {text!r} is not valid: no ?query, no '#' (a wildcard); {usage}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"MQTT URL {text!r} has an invalid port: {usage}") from None
    if not parts.hostname:
        raise ConfigError(f"MQTT URL {text!r} names no host: {usage}")
    prefix = unquote(parts.path).strip("/") or DEFAULT_PREFIX
    if any(c in prefix for c in "+#\x00") or "//" in prefix:
        raise ConfigError(f"MQTT topic prefix {prefix!r} is not valid: no '+', '#' or empty levels")
    return MqttUrl(parts.hostname, DEFAULT_PORT if port is None else port, prefix)


def mqtt_payload(
    record: DecisionRecord, *, kind: str, seq: int, run: str, source: str | None, published_s: float
) -> bytes:
    """The JSON message of one decision or alert (schema :data:`MQTT_SCHEMA_VERSION`, see the module).

    Parameters
    ----------
    record : DecisionRecord
    kind : {"decision", "alert"}
    seq : int
        Message number in its topic, from 0.
    run : str
        Identifier of the run.
    source : str or None
        Where the samples come from (the source spec).
    published_s : float
        Wall-clock time of publication, seconds since the Unix epoch.
    """
    if kind not in KINDS:
        raise ConfigError(f"kind={kind!r} is not valid: use one of {KINDS}")
    stamp = _dt.datetime.fromtimestamp(published_s, _dt.timezone.utc).isoformat(timespec="milliseconds")
    body = {
        "schema_version": MQTT_SCHEMA_VERSION,
        "kind": kind,
        "run": run,
        "seq": int(seq),
        "source": source,
        "published_utc": stamp.replace("+00:00", "Z"),
        "decision": json.loads(record.to_json()),
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


class MqttSink(Sink):
    """Decisions to ``PREFIX/decision`` and alerts to ``PREFIX/alert`` on an MQTT broker, QoS 1.

    Parameters
    ----------
    url : str
        ``mqtt://HOST:PORT/PREFIX`` (:func:`parse_mqtt_url`).
    queue_size : int
        Most messages held while unacknowledged (in flight or waiting for the broker); one more is dropped
        and counted.
    source : str, optional
        The source spec, carried in every payload.
    drain_timeout_s : float
        Longest wait, when the stream ends, for the broker to acknowledge what is queued.
    keepalive_s : int
        MQTT keep-alive: a silent broker is declared gone after about 1.5 times this.
    reconnect_min_s, reconnect_max_s : float
        First and longest wait between reconnection attempts (doubling in between).
    wall_clock : callable
        Seconds since the Unix epoch, for ``published_utc``.
    """

    def __init__(
        self,
        url: str,
        *,
        queue_size: int = 10_000,
        source: str | None = None,
        drain_timeout_s: float = 5.0,
        keepalive_s: int = 15,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 8.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        import paho.mqtt.client as mqtt

        if not (isinstance(queue_size, int) and queue_size >= 1):
            raise ConfigError(f"queue_size={queue_size!r} is not valid: give 1 or more messages")
        self.url = parse_mqtt_url(url)
        self.queue_size = queue_size
        self.source = source
        self.drain_timeout_s = float(drain_timeout_s)
        self.run_id = uuid.uuid4().hex
        self._mqtt = mqtt
        self._wall_clock = wall_clock
        self._seq = dict.fromkeys(KINDS, 0)
        self._cond = threading.Condition()
        self.n_published = dict.fromkeys(KINDS, 0)  # offered to the sink
        self.n_dropped = dict.fromkeys(KINDS, 0)  # refused: the queue was full
        self.n_accepted = 0  # taken into the queue
        self.n_delivered = 0  # acknowledged by the broker
        self.n_disconnects = 0
        self._n_connect_failures = 0
        self._closing = False
        self._drained = False
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"lorarffi-{self.run_id[:16]}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.max_queued_messages_set(queue_size)
        client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(self.url.host, self.url.port, keepalive=int(keepalive_s))
        client.loop_start()  # connects, and reconnects, in its own thread; messages queue meanwhile

    # -- paho callbacks (its network thread) -----------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("MQTT broker %s refused the connection: %s", self.url, reason)
        else:
            log.info("MQTT: connected to %s (%d message(s) queued)", self.url, self.n_pending)
            self._n_connect_failures = 0

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._n_connect_failures += 1
        if self._n_connect_failures in (1, 10) or self._n_connect_failures % 100 == 0:
            log.warning(
                "MQTT: cannot reach %s (attempt %d); retrying, %d message(s) queued",
                self.url,
                self._n_connect_failures,
                self.n_pending,
            )

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._closing:
            return
        self.n_disconnects += 1
        log.warning("MQTT: connection to %s lost (%s); reconnecting, messages queue", self.url, reason)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._cond:
            self.n_delivered += 1
            self._cond.notify_all()

    # -- the sink ------------------------------------------------------------------------------------------
    @property
    def n_pending(self) -> int:
        """Messages taken but not yet acknowledged by the broker."""
        return max(0, self.n_accepted - self.n_delivered)

    def _publish(self, kind: str, record: DecisionRecord) -> None:
        seq = self._seq[kind]
        self._seq[kind] = seq + 1
        self.n_published[kind] += 1
        payload = mqtt_payload(
            record, kind=kind, seq=seq, run=self.run_id, source=self.source, published_s=self._wall_clock()
        )
        with self._cond:
            self.n_accepted += 1  # before publishing: the acknowledgement may come first
        info = self._client.publish(self.url.topic(kind), payload, qos=1)
        if info.rc not in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: queued
            with self._cond:
                self.n_accepted -= 1
            self.n_dropped[kind] += 1
            n = sum(self.n_dropped.values())
            if n == 1 or n % 1000 == 0:
                log.warning(
                    "MQTT: %d message(s) dropped so far (%s; queue of %d full while %s is unreachable)",
                    n,
                    self._mqtt.error_string(info.rc),
                    self.queue_size,
                    self.url,
                )

    def on_decisions(self, records: Sequence[DecisionRecord], packets: Sequence[Any]) -> None:
        for rec in records:
            self._publish("decision", rec)
            if rec.is_alert:
                self._publish("alert", rec)

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until the broker has acknowledged every queued message, at most ``timeout_s`` (default
        ``drain_timeout_s``); True when nothing is left."""
        timeout = self.drain_timeout_s if timeout_s is None else float(timeout_s)
        with self._cond:
            done = self._cond.wait_for(lambda: self.n_delivered >= self.n_accepted, timeout)
        self._drained = True
        return done

    def counters(self) -> dict[str, dict[str, Any]]:
        """``{"mqtt": {...}}``: messages offered per topic, delivered (acknowledged), dropped because the
        queue was full, undelivered (still queued), broker connections lost."""
        return {
            "mqtt": {
                "broker": str(self.url),
                "n_decisions": self.n_published["decision"],
                "n_alerts": self.n_published["alert"],
                "n_delivered": self.n_delivered,
                "n_dropped": sum(self.n_dropped.values()),
                "n_dropped_alerts": self.n_dropped["alert"],
                "n_undelivered": self.n_pending,
                "n_disconnects": self.n_disconnects,
            }
        }

    def close(self, summary: LiveSummary | None = None) -> None:
        if not self._drained:
            self.drain()
        c = self.counters()["mqtt"]
        if c["n_dropped"] or c["n_undelivered"]:
            log.warning(
                "MQTT: of %d message(s) for %s, %d dropped (queue full) and %d never acknowledged",
                c["n_decisions"] + c["n_alerts"],
                self.url,
                c["n_dropped"],
                c["n_undelivered"],
            )
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
