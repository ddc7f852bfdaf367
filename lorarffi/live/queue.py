"""The work queue between capture nodes and workers: its address and its message format (Redis Streams).

A queue is ``redis://HOST:PORT/STREAM`` (``rediss://`` for TLS; ``?group=NAME`` names the consumer group,
default :data:`DEFAULT_GROUP`; ``?db=N``; other query options such as ``ssl_ca_certs=PATH`` go to redis-py).
The password comes from the URL, else from the environment (:data:`PASSWORD_ENV`) or a file named there
(:data:`PASSWORD_FILE_ENV`); :class:`QueueUrl` never shows it.

Each stream entry is one message, a flat map of ASCII field names to bytes, schema
:data:`QUEUE_SCHEMA_VERSION` (field ``v``). Every message has ``v``, ``kind``, ``node`` (the capture node's
id), ``run`` (a new id per node run) and ``seq`` (its number within the run, from 0). Kinds:

- ``preamble``: one aligned packet. ``start``, ``stop``, ``fingerprint_start`` (absolute sample indices of
  the node's stream), ``start_frac``, ``fs_hz`` (rate of those indices), ``time_unix_s`` (absolute time of
  ``start``), ``detected_unix_s`` (node wall clock at detection), ``node_latency_ms`` (last preamble sample's
  arrival to detection), ``channel_hz``, ``sf``, ``bw_hz``, ``cfo_hz``, ``cfo_coarse_hz``, ``snr_db``,
  ``power_db``, ``sync_word``, ``n_preamble_symbols``, ``preamble_fs_hz``, ``packet_fields`` (which of
  ``channel_hz``, ``sf`` the node's packet itself carried), ``preamble`` (the CFO-compensated
  fingerprint window, little-endian complex64, 64 KiB at SF7 and 1 MS/s) and, when the node is asked for
  it (models trained without CFO compensation), ``preamble_with_cfo`` (the window as received). Numbers
  are decimal text (floats in ``repr`` form: exact round trip).
- ``loss``: packets the node could not queue. ``reason`` (``dropped``: its buffer was full while Redis was
  unreachable; ``capped``: entries the stream's length cap removed before any worker read them), ``starts``
  (comma-separated start samples of the dropped packets) and ``n_lost`` (how many; for ``capped``, the
  node run's total so far, as which packets is not known).

A packet is named ``NODE/RUN/START`` (:attr:`QueueMessage.key`): the key its one decision (or loss record)
is logged under.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import numpy as np

from lorarffi.dsp.packet import Packet
from lorarffi.errors import ConfigError, InputDataError

__all__ = [
    "QUEUE_SCHEMA_VERSION",
    "DEFAULT_GROUP",
    "PASSWORD_ENV",
    "PASSWORD_FILE_ENV",
    "QueueUrl",
    "parse_queue_url",
    "connect",
    "ensure_group",
    "QueueMessage",
    "preamble_message",
    "loss_message",
    "decode_message",
    "packet_key",
]

QUEUE_SCHEMA_VERSION = 1
"""Version of the message schema; raised when a field changes meaning or goes away (not when one is added)."""
DEFAULT_GROUP = "lorarffi-workers"
DEFAULT_PORT = 6379
PASSWORD_ENV = "LORA_RFFI_REDIS_PASSWORD"
"""Environment variable holding the Redis password (when the URL has none)."""
PASSWORD_FILE_ENV = "LORA_RFFI_REDIS_PASSWORD_FILE"
"""Environment variable naming a file whose first line is the Redis password."""
_IQ_DTYPE = np.dtype("<c8")


@dataclass(frozen=True)
class QueueUrl:
    """A Redis stream and consumer group: ``redis://[USER@]HOST:PORT/STREAM[?group=NAME]``.

    ``password`` is excluded from ``repr`` and ``str``.
    """

    host: str
    port: int
    stream: str
    group: str = DEFAULT_GROUP
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    options: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}@" if self.username else ""
        query = urlencode([("group", self.group)] if self.group != DEFAULT_GROUP else [])
        return f"{'rediss' if self.tls else 'redis'}://{user}{host}:{self.port}/{self.stream}" + (
            f"?{query}" if query else ""
        )


def _password_from_environment() -> str | None:
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    path = os.environ.get(PASSWORD_FILE_ENV)
    if not path:
        return None
    try:
        lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputDataError(path, f"cannot read the Redis password file: {exc.strerror or exc}") from None
    return lines[0] if lines else ""


def parse_queue_url(text: str) -> QueueUrl:
    """``redis://HOST:PORT/STREAM`` -> :class:`QueueUrl` (see the module docstring).

    Examples
    --------
    >>> u = parse_queue_url("redis://127.0.0.1:6380/lora?group=site1")
    >>> u.host, u.port, u.stream, u.group, u.tls
    ('127.0.0.1', 6380, 'lora', 'site1', False)
    >>> str(parse_queue_url("rediss://:hunter2@10.0.0.5/lora"))
    'rediss://10.0.0.5:6379/lora'
    """
    usage = "use redis://HOST:PORT/STREAM (e.g. redis://127.0.0.1:6379/lorarffi), rediss:// for TLS"
    parts = urlsplit(text.strip())
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"queue URL {_masked(text)!r} is not valid: {usage}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"queue URL {_masked(text)!r} has an invalid port: {usage}") from None
    if not parts.hostname:
        raise ConfigError(f"queue URL {_masked(text)!r} names no host: {usage}")
    stream = unquote(parts.path).strip("/")
    if not stream or "/" in stream:
        raise ConfigError(f"queue URL {_masked(text)!r} names no stream (one path level): {usage}")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    group = query.pop("group", DEFAULT_GROUP) or DEFAULT_GROUP
    try:
        db = int(query.pop("db", 0))
    except ValueError:
        raise ConfigError(f"queue URL {_masked(text)!r}: db must be an integer") from None
    password = unquote(parts.password) if parts.password else _password_from_environment()
    return QueueUrl(
        host=parts.hostname,
        port=DEFAULT_PORT if port is None else port,
        stream=stream,
        group=group,
        tls=parts.scheme == "rediss",
        username=unquote(parts.username) if parts.username else None,
        password=password,
        db=db,
        options=tuple(sorted(query.items())),
    )


def _masked(text: str) -> str:
    from lorarffi.rffi.registry.engine import redact_url

    return redact_url(text)


def connect(url: QueueUrl, *, timeout_s: float = 5.0) -> Any:
    """A redis-py client for ``url`` (connects lazily, on the first command)."""
    import redis

    scheme = "rediss" if url.tls else "redis"
    host = f"[{url.host}]" if ":" in url.host else url.host
    query = f"?{urlencode(url.options)}" if url.options else ""
    return redis.Redis.from_url(
        f"{scheme}://{host}:{url.port}/{url.db}{query}",
        username=url.username,
        password=url.password,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )


def ensure_group(client: Any, url: QueueUrl) -> None:
    """Create the stream and its consumer group (reading from the stream's first entry) unless they exist."""
    import redis

    try:
        client.xgroup_create(url.stream, url.group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def packet_key(node: str, run: str, start: int) -> str:
    """The name a packet's decision is logged under: ``NODE/RUN/START``."""
    return f"{node}/{run}/{int(start)}"


@dataclass(frozen=True)
class QueueMessage:
    """One decoded stream entry.

    Attributes
    ----------
    kind : {"preamble", "loss"}
    node, run : str
        The capture node and its run.
    seq : int
        The message's number within the run.
    packet : Packet or None
        The aligned packet (``preamble`` messages).
    time_unix_s, detected_unix_s, node_latency_ms : float
        Absolute time of the packet's start, node wall clock at detection, and the node's own latency.
    channel_hz : float or None
    sf : int
    bw_hz : float
    reason : str or None
        Why packets were lost (``loss`` messages).
    lost_starts : tuple of int
        Start samples of lost packets (``loss`` with ``reason="dropped"``).
    n_lost : int
        Packets lost (``loss`` messages).
    """

    kind: str
    node: str
    run: str
    seq: int
    packet: Packet | None = None
    time_unix_s: float = math.nan
    detected_unix_s: float = math.nan
    node_latency_ms: float = math.nan
    channel_hz: float | None = None
    sf: int = 0
    bw_hz: float = math.nan
    reason: str | None = None
    lost_starts: tuple[int, ...] = ()
    n_lost: int = 0

    @property
    def key(self) -> str:
        """``NODE/RUN/START`` of a preamble message."""
        if self.packet is None:
            raise ConfigError("a loss message names no single packet")
        return packet_key(self.node, self.run, self.packet.start)


def _head(node: str, run: str, seq: int, kind: str) -> dict[str, bytes]:
    return {"v": b"%d" % QUEUE_SCHEMA_VERSION, "kind": kind.encode(), "node": node.encode(),
            "run": run.encode(), "seq": b"%d" % seq}  # fmt: skip


def _num(x: float | int | None) -> bytes:
    return b"" if x is None else repr(float(x) if isinstance(x, float) else x).encode()


def preamble_message(
    packet: Packet,
    *,
    node: str,
    run: str,
    seq: int,
    time_unix_s: float,
    detected_unix_s: float,
    node_latency_ms: float,
    channel_hz: float | None,
    sf: int,
    bw_hz: float,
    with_cfo: bool = False,
) -> dict[str, bytes]:
    """The stream entry of one detected packet (schema in the module docstring); ``with_cfo`` adds the
    window as received (``preamble_with_cfo``, for models trained without CFO compensation)."""
    msg = _head(node, run, seq, "preamble")
    for name in ("start", "stop", "fingerprint_start", "sync_word", "n_preamble_symbols"):
        msg[name] = b"%d" % int(getattr(packet, name))
    for name in ("start_frac", "fs_hz", "preamble_fs_hz", "cfo_hz", "cfo_coarse_hz", "snr_db", "power_db"):
        msg[name] = _num(float(getattr(packet, name)))
    own = [n for n in ("channel_hz", "sf") if getattr(packet, n, None) is not None]  # the packet's own
    if "channel_hz" in own:
        channel_hz = float(packet.channel_hz)  # type: ignore[attr-defined]
    if "sf" in own:
        sf = int(packet.sf)  # type: ignore[attr-defined]
    msg.update(
        packet_fields=",".join(own).encode(),
        time_unix_s=_num(float(time_unix_s)),
        detected_unix_s=_num(float(detected_unix_s)),
        node_latency_ms=_num(float(node_latency_ms)),
        channel_hz=_num(None if channel_hz is None else float(channel_hz)),
        sf=b"%d" % int(sf),
        bw_hz=_num(float(bw_hz)),
        preamble=np.ascontiguousarray(packet.preamble, _IQ_DTYPE).tobytes(),
    )
    if with_cfo and packet.preamble_with_cfo is not None:
        msg["preamble_with_cfo"] = np.ascontiguousarray(packet.preamble_with_cfo, _IQ_DTYPE).tobytes()
    return msg


def loss_message(
    *, node: str, run: str, seq: int, reason: str, starts: tuple[int, ...] = (), n_lost: int | None = None
) -> dict[str, bytes]:
    """A ``loss`` entry: the start samples of dropped packets, or a count when they are not known."""
    msg = _head(node, run, seq, "loss")
    msg["reason"] = reason.encode()
    msg["n_lost"] = b"%d" % (len(starts) if n_lost is None else int(n_lost))
    if starts:
        msg["starts"] = ",".join(str(int(s)) for s in starts).encode()
    return msg


def _text(fields: Mapping[bytes, bytes], name: str) -> str:
    try:
        return fields[name.encode()].decode()
    except KeyError:
        raise ValueError(f"no field {name!r}") from None


def _iq(raw: bytes, name: str) -> np.ndarray:
    if len(raw) % _IQ_DTYPE.itemsize:
        raise ValueError(f"{name} holds {len(raw)} bytes, not a whole number of complex64 samples")
    return np.frombuffer(raw, _IQ_DTYPE).astype(np.complex64)  # a writable native copy


def decode_message(fields: Mapping[bytes, bytes]) -> QueueMessage:
    """A stream entry (field name -> bytes, as redis-py returns it) -> :class:`QueueMessage`.

    Raises
    ------
    ValueError
        The entry is not a message of this schema (another version, a missing or malformed field).
    """
    version = fields.get(b"v")
    if version != b"%d" % QUEUE_SCHEMA_VERSION:
        raise ValueError(f"schema version {version!r}, expected {QUEUE_SCHEMA_VERSION}")
    kind, node, run = _text(fields, "kind"), _text(fields, "node"), _text(fields, "run")
    seq = int(_text(fields, "seq"))
    if kind == "loss":
        starts = _text(fields, "starts").split(",") if b"starts" in fields else []
        return QueueMessage(
            kind, node, run, seq, reason=_text(fields, "reason"), lost_starts=tuple(int(s) for s in starts),
            n_lost=int(_text(fields, "n_lost")),
        )  # fmt: skip
    if kind != "preamble":
        raise ValueError(f"unknown kind {kind!r}")
    ints = {n: int(_text(fields, n)) for n in ("start", "stop", "fingerprint_start", "sync_word",
                                                "n_preamble_symbols")}  # fmt: skip
    floats = {n: float(_text(fields, n)) for n in ("start_frac", "fs_hz", "preamble_fs_hz", "cfo_hz",
                                                    "cfo_coarse_hz", "snr_db", "power_db")}  # fmt: skip
    with_cfo = fields.get(b"preamble_with_cfo")
    packet = Packet(
        preamble=_iq(fields[b"preamble"], "preamble") if b"preamble" in fields else _missing("preamble"),
        preamble_with_cfo=None if with_cfo is None else _iq(with_cfo, "preamble_with_cfo"),
        **ints,
        **floats,
    )
    text = _text(fields, "channel_hz")
    channel = None if text == "" else float(text)
    own = fields.get(b"packet_fields", b"").decode().split(",")
    return QueueMessage(
        kind,
        node,
        run,
        seq,
        packet=_with_channel(packet, own, channel, int(_text(fields, "sf"))),
        time_unix_s=float(_text(fields, "time_unix_s")),
        detected_unix_s=float(_text(fields, "detected_unix_s")),
        node_latency_ms=float(_text(fields, "node_latency_ms")),
        channel_hz=channel,
        sf=int(_text(fields, "sf")),
        bw_hz=float(_text(fields, "bw_hz")),
    )


def _missing(name: str) -> Any:
    raise ValueError(f"no field {name!r}")


def _with_channel(packet: Packet, own: list[str], channel_hz: float | None, sf: int) -> Packet:
    """The packet with the channel and spreading factor it carried on the node (``own``), as it was there."""
    names = {f.name for f in dataclasses.fields(Packet)}
    values = {"channel_hz": channel_hz, "sf": sf}
    changes = {n: values[n] for n in own if n in names}
    return dataclasses.replace(packet, **changes) if changes else packet
