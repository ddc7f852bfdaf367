"""``zmq:tcp://HOST:PORT`` and ``zmq+pull:...``: samples from GNU Radio's ZMQ PUB / PUSH sinks.

Wire format (gr-zeromq ``base_impl.cc``, ``tag_headers.cc``): each message is the raw bytes of the items
(complex64 here, host byte order), one message per ``work()`` call, so lengths vary. Optional parts:

- a **key** (PUB sink "Filter Key"): a separate first frame, so the message is multipart; the last frame holds
  the samples.
- a **pass_tags header** inside the payload frame: ``u16 magic 0x5FF0, u8 version 1, u64 offset (absolute item
  index of the first item), u64 ntags`` (19 bytes, little-endian on x86), then per tag ``u64 offset`` and
  three serialized PMTs (key, value, srcid; big-endian, 1-byte type code). The tags are skipped (an
  ``rx_freq`` tag updates :attr:`~lorarffi.capture.base.Source.center_freq_hz`); the offset places the
  samples in the stream, so messages the publisher dropped show as a gap of the right size.

Without tags nothing on the wire says where a message belongs: indices simply count the items received, and
messages lost in transit (a PUB sink drops at its high-water mark) cannot be seen; the source says so
(:meth:`ZmqSource.loss_unobservable_reason`). A PUSH sink waits for the receiver instead of dropping, and
tagged messages reveal every gap, so those two modes count every loss. Malformed messages
(payload not a multiple of 8 bytes, a truncated header or tag) are counted in ``n_bad_frames`` and dropped;
they never end the stream. The source connects (GNU Radio sinks bind); ``bind=True`` binds instead.
"""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lorarffi.capture.base import ThreadedSource
from lorarffi.errors import ConfigError, InputDataError

__all__ = [
    "ZmqSource",
    "check_endpoint",
    "TagHeader",
    "parse_tag_header",
    "skip_pmt",
    "GR_HEADER_MAGIC",
    "GR_HEADER_VERSION",
]

log = logging.getLogger(__name__)

GR_HEADER_MAGIC = 0x5FF0
GR_HEADER_VERSION = 0x01
_HEADER = struct.Struct("<HBQQ")  # 19 bytes, no padding
_ITEM_BYTES = 8  # complex64

# PMT serial type codes (gnuradio-runtime/include/pmt/pmt_serial_tags.h)
_PST_TRUE, _PST_FALSE, _PST_SYMBOL, _PST_INT32, _PST_DOUBLE, _PST_COMPLEX = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
_PST_NULL, _PST_PAIR, _PST_VECTOR, _PST_DICT, _PST_UNIFORM_VECTOR = 0x06, 0x07, 0x08, 0x09, 0x0A
_PST_UINT64, _PST_TUPLE, _PST_INT64 = 0x0B, 0x0C, 0x0D
_FIXED = {
    _PST_TRUE: 0,
    _PST_FALSE: 0,
    _PST_NULL: 0,
    _PST_INT32: 4,
    _PST_DOUBLE: 8,
    _PST_COMPLEX: 16,
    _PST_UINT64: 8,
    _PST_INT64: 8,
}
# uniform vector element sizes by subtype (UVI_U8 ... UVI_C64), the endian bit masked off
_UVI_BYTES = (1, 1, 2, 2, 4, 4, 8, 8, 4, 8, 8, 16)


def skip_pmt(buf: bytes | memoryview, pos: int) -> tuple[int, Any]:
    """Skip one serialized PMT starting at ``pos``; returns the position after it and a simple value.

    Symbols, booleans, integers and doubles are decoded (the value), containers are skipped (value None).

    Raises
    ------
    ValueError
        The bytes end early or hold an unknown type code.
    """
    n = len(buf)
    value: Any = None
    first = True
    while True:  # pairs (lists, dicts) are skipped iteratively: car, then continue with the cdr
        if pos >= n:
            raise ValueError("PMT truncated")
        tag = buf[pos]
        pos += 1
        if tag in _FIXED:
            size = _FIXED[tag]
            if pos + size > n:
                raise ValueError("PMT truncated")
            if first:
                if tag == _PST_TRUE:
                    value = True
                elif tag == _PST_FALSE:
                    value = False
                elif tag == _PST_INT32:
                    value = struct.unpack_from(">i", buf, pos)[0]
                elif tag == _PST_DOUBLE:
                    value = struct.unpack_from(">d", buf, pos)[0]
                elif tag == _PST_UINT64:
                    value = struct.unpack_from(">Q", buf, pos)[0]
                elif tag == _PST_INT64:
                    value = struct.unpack_from(">q", buf, pos)[0]
            return pos + size, value
        if tag == _PST_SYMBOL:
            if pos + 2 > n:
                raise ValueError("PMT symbol truncated")
            length = struct.unpack_from(">H", buf, pos)[0]
            pos += 2
            if pos + length > n:
                raise ValueError("PMT symbol truncated")
            if first:
                value = bytes(buf[pos : pos + length]).decode("utf-8", "replace")
            return pos + length, value
        if tag in (_PST_VECTOR, _PST_TUPLE):
            if pos + 4 > n:
                raise ValueError("PMT vector truncated")
            count = struct.unpack_from(">I", buf, pos)[0]
            pos += 4
            for _ in range(count):
                pos, _v = skip_pmt(buf, pos)
            return pos, None
        if tag == _PST_UNIFORM_VECTOR:
            if pos + 6 > n:
                raise ValueError("PMT uniform vector truncated")
            subtype = buf[pos] & 0x7F
            count = struct.unpack_from(">I", buf, pos + 1)[0]
            npad = buf[pos + 5]
            if subtype >= len(_UVI_BYTES):
                raise ValueError(f"PMT uniform vector subtype {subtype} unknown")
            pos += 6 + npad + count * _UVI_BYTES[subtype]
            if pos > n:
                raise ValueError("PMT uniform vector truncated")
            return pos, None
        if tag in (_PST_PAIR, _PST_DICT):
            pos, _car = skip_pmt(buf, pos)
            first = False
            continue  # the cdr follows
        raise ValueError(f"PMT type code 0x{tag:02x} unknown")


@dataclass(frozen=True, slots=True)
class TagHeader:
    """A parsed pass_tags header: absolute offset of the first item, tags, and where the items start.

    Attributes
    ----------
    offset : int
        Absolute item index (in the publisher's stream) of the first item of the message.
    tags : tuple of (int, str or None, object)
        ``(absolute offset, key, value)`` of each tag; key/value decoded when simple, else None.
    payload_start : int
        Byte position of the first item in the frame.
    """

    offset: int
    tags: tuple[tuple[int, Any, Any], ...]
    payload_start: int


def parse_tag_header(frame: bytes | memoryview) -> TagHeader:
    """Parse the gr-zeromq pass_tags header at the start of ``frame``.

    Raises
    ------
    ValueError
        The magic or version does not match, or the header or a tag is truncated.
    """
    if len(frame) < _HEADER.size:
        raise ValueError(f"frame of {len(frame)} bytes is shorter than the {_HEADER.size}-byte tag header")
    magic, version, offset, ntags = _HEADER.unpack_from(frame, 0)
    if magic != GR_HEADER_MAGIC or version != GR_HEADER_VERSION:
        raise ValueError(f"tag header magic 0x{magic:04x} version {version} (expected 0x5ff0 version 1)")
    pos = _HEADER.size
    if ntags > (len(frame) - pos) // 11:  # a tag is at least 8 + 3 bytes
        raise ValueError(f"tag header declares {ntags} tags, more than the frame can hold")
    tags = []
    for _ in range(ntags):
        if pos + 8 > len(frame):
            raise ValueError("tag truncated")
        tag_offset = struct.unpack_from("<Q", frame, pos)[0]
        pos += 8
        pos, key = skip_pmt(frame, pos)
        pos, value = skip_pmt(frame, pos)
        pos, _srcid = skip_pmt(frame, pos)
        tags.append((tag_offset, key, value))
    return TagHeader(offset=int(offset), tags=tuple(tags), payload_start=pos)


_FIRST_NOTE_S = 5.0  # seconds without a first message before the source says what it waits for


def check_endpoint(endpoint: str, kind: str = "zmq") -> None:
    """Refuse an endpoint ZeroMQ cannot use, in words: no ``transport://``, a tcp endpoint without a port, or
    a numeric host that is not an IPv4 address.

    Raises
    ------
    ConfigError
    """
    import ipaddress

    transport, sep, rest = endpoint.partition("://")
    if not sep or not transport or not rest:
        raise ConfigError(
            f"{kind}:{endpoint} is not a ZeroMQ endpoint: use {kind}:tcp://HOST:PORT "
            "(e.g. zmq:tcp://127.0.0.1:5555)"
        )
    if transport != "tcp":
        return
    host, sep, port = rest.rpartition(":")
    if not sep or not (port.isdigit() and int(port) < 65536 or port == "*"):
        raise ConfigError(f"{kind}:{endpoint}: the port is missing or above 65535: use tcp://HOST:PORT")
    if host and all(c.isdigit() or c == "." for c in host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"{kind}:{endpoint}: {host} is not an IPv4 address") from None


def _looks_tagged(frame: bytes | memoryview) -> bool:
    return (
        len(frame) >= _HEADER.size and frame[0] == 0xF0 and frame[1] == 0x5F and frame[2] == GR_HEADER_VERSION
    )


class ZmqSource(ThreadedSource):
    """complex64 samples from a ZeroMQ SUB or PULL socket speaking GNU Radio's gr-zeromq format.

    Parameters
    ----------
    endpoint : str
        ``tcp://HOST:PORT`` (or any ZeroMQ endpoint) of the GNU Radio sink.
    fs_hz : float
        Sample rate in Hz (nothing on the wire says it).
    pattern : {"sub", "pull"}
        SUB (for a PUB sink; subscribes to everything) or PULL (for a PUSH sink).
    pass_tags : bool or None
        True: every message carries the tag header; False: never; None: recognise it by its magic.
    bind : bool
        Bind the endpoint instead of connecting to it.
    center_freq_hz : float, optional
    idle_timeout_s : float, optional
        End the stream when no message arrives for this long after the first one (default: never).
    buffer_s : float
        Ring buffer length in seconds.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        fs_hz: float | None = None,
        pattern: Literal["sub", "pull"] = "sub",
        pass_tags: bool | None = None,
        bind: bool = False,
        center_freq_hz: float | None = None,
        idle_timeout_s: float | None = None,
        buffer_s: float = 2.0,
        chunk_samples: int = 1 << 16,
    ) -> None:
        kind = "zmq+pull" if pattern == "pull" else "zmq"
        check_endpoint(endpoint, kind)
        if fs_hz is None:
            raise ConfigError(
                f"{kind}:{endpoint}: give the sample rate (-s/--fs-hz; fs_hz from Python): nothing on the "
                "wire says it"
            )
        if pattern not in ("sub", "pull"):
            raise ConfigError(f"pattern={pattern!r} is not valid: use 'sub' or 'pull'")
        super().__init__(
            fs_hz=fs_hz,
            center_freq_hz=center_freq_hz,
            buffer_s=buffer_s,
            overflow="drop" if pattern == "sub" else "block",
            chunk_samples=chunk_samples,
        )
        import zmq

        self.name = f"zmq{'+pull' if pattern == 'pull' else ''}:{endpoint}"
        self.endpoint = endpoint
        self.pattern = pattern
        self.pass_tags = pass_tags
        self.idle_timeout_s = idle_timeout_s
        self.n_tags = 0
        self.n_messages = 0
        self.n_tagged_messages = 0
        self.n_untagged_messages = 0
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB if pattern == "sub" else zmq.PULL)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 10_000)
        if pattern == "sub":
            self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            if bind:
                self._sock.bind(endpoint)
            else:
                self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise InputDataError(endpoint, f"cannot {'bind' if bind else 'connect'}: {exc}") from None
        self.last_endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode() if bind else endpoint

    @property
    def waiting_for(self) -> str:
        """What the source waits for, in words (for messages while nothing arrives)."""
        sender = "PUB" if self.pattern == "sub" else "PUSH"
        verb = "bound at" if self.last_endpoint != self.endpoint else "at"
        return (
            f"a GNU Radio ZMQ {sender} sink {verb} {self.last_endpoint} to send samples (is its flowgraph "
            "running, and is this its address?)"
        )

    def _decode(self, frame: memoryview) -> tuple[int | None, npt.NDArray[np.complex64]] | None:
        """(absolute offset or None, samples) of one payload frame; None when malformed (counted)."""
        offset = None
        payload_start = 0
        tagged = self.pass_tags if self.pass_tags is not None else _looks_tagged(frame)
        if tagged:
            try:
                header = parse_tag_header(frame)
            except ValueError as exc:
                if self.pass_tags is None and len(frame) % _ITEM_BYTES == 0:
                    tagged = False  # raw samples that happen to start like a header
                else:
                    self._bad(f"bad tag header: {exc}")
                    return None
            else:
                offset, payload_start = header.offset, header.payload_start
                self.n_tagged_messages += 1
                self.n_tags += len(header.tags)
                for _off, key, value in header.tags:
                    if key == "rx_freq" and isinstance(value, float):
                        self.center_freq_hz = value
        n_bytes = len(frame) - payload_start
        if n_bytes % _ITEM_BYTES:
            self._bad(f"payload of {n_bytes} bytes is not a multiple of {_ITEM_BYTES} (complex64)")
            return None
        if offset is None:
            self.n_untagged_messages += 1
        iq = np.frombuffer(frame, dtype=np.complex64, offset=payload_start, count=n_bytes // _ITEM_BYTES)
        return offset, iq

    def loss_unobservable_reason(self) -> str | None:
        """Why losses may go uncounted: raw PUB/SUB (no offsets on the wire), malformed messages dropped
        from an untagged stream (their size is unknown), overflows of unknown size; None when every loss is
        counted (tagged messages; raw PUSH/PULL, where the sender waits instead of dropping)."""
        reasons = []
        if self.pattern == "sub" and (self.n_untagged_messages or not self.n_tagged_messages):
            reasons.append(
                "raw PUB/SUB carries no sequence numbers: messages the publisher dropped cannot be seen "
                "(use pass_tags, or a PUSH sink with zmq+pull:)"
                if self.n_untagged_messages
                else "PUB/SUB with no tagged message received: nothing shows what the publisher sent"
            )
        if self.n_bad_frames and self.n_untagged_messages:
            reasons.append(f"{self.n_bad_frames} malformed message(s) dropped; their samples are not counted")
        base = super().loss_unobservable_reason()
        if base:
            reasons.append(base)
        return "; ".join(reasons) or None

    def _bad(self, problem: str) -> None:
        with self._lock:
            self.n_bad_frames += 1
        if self.n_bad_frames <= 3:
            log.warning("%s: message dropped: %s", self.name, problem)

    def _produce(self) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        index = 0  # stream index of the next sample
        rebase = None  # stream index minus publisher offset, fixed by the first tagged message
        last_rx = None
        t_start = time.monotonic()
        next_note_s = _FIRST_NOTE_S
        log.info("%s: waiting for %s", self.name, self.waiting_for)
        try:
            while not self.stopping:
                if last_rx is None and time.monotonic() - t_start >= next_note_s:
                    log.warning(
                        "%s: no message after %.0f s; waiting for %s",
                        self.name,
                        next_note_s,
                        self.waiting_for,
                    )
                    next_note_s *= 2
                if not poller.poll(100):
                    if (
                        self.idle_timeout_s is not None
                        and last_rx is not None
                        and time.monotonic() - last_rx > self.idle_timeout_s
                    ):
                        return
                    continue
                frames = self._sock.recv_multipart(copy=False)
                last_rx = time.monotonic()
                self.n_messages += 1
                decoded = self._decode(frames[-1].buffer)
                if decoded is None:
                    continue
                offset, iq = decoded
                if offset is not None:
                    if rebase is None:
                        rebase = index - offset if index else 0
                    start = offset + rebase
                    if start > index and index > 0:
                        with self._lock:
                            self.n_overflows += 1  # the publisher's offsets skip items: lost in transit
                    elif start < index:  # the publisher restarted its count: continue, size unknown
                        with self._lock:
                            self.n_untimed_overflows += 1
                        rebase = index - offset
                        start = index
                    index = start
                if iq.size == 0:
                    continue
                if not self._emit(index, iq, last_rx):  # the ring copies
                    return
                index += iq.size
        finally:
            self._sock.close(0)

    def _close(self) -> None:
        super()._close()
        if not self._sock.closed and (self._thread is None or not self._thread.is_alive()):
            self._sock.close(0)
