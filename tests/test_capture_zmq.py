"""ZeroMQ source against a publisher written here that speaks GNU Radio's gr-zeromq wire format.

The messages come from ``support`` (a re-implementation of gr-zeromq's framing and ``pmt::serialize``): raw
complex64 bytes per message, an optional key frame, an optional pass_tags header. Sockets bind 127.0.0.1
port 0; waits poll with timeouts.
"""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from support import (
    gr_message,
    pmt_dict,
    pmt_double,
    pmt_f32vector,
    pmt_int,
    pmt_symbol,
    pmt_tuple,
    pmt_uint64,
)

zmq = pytest.importorskip("zmq")

from lorarffi.capture.zmq_source import ZmqSource, parse_tag_header, skip_pmt  # noqa: E402

FS_HZ = 1e6
IDLE_TIMEOUT_S = 5.0  # a source whose messages all go astray ends, and the test fails instead of hanging


class GrPublisher:
    """A PUB (or PUSH) sink on 127.0.0.1:0; an XPUB under the hood tells when a subscriber has joined."""

    def __init__(self, pattern: str = "pub") -> None:
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.XPUB if pattern == "pub" else zmq.PUSH)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.pattern = pattern

    def wait_subscriber(self, timeout_s: float = 10.0) -> None:
        if self.pattern != "pub":
            return
        assert self.sock.poll(int(timeout_s * 1000)), "no subscriber joined"
        assert self.sock.recv()[:1] == b"\x01"  # subscription message

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def close(self) -> None:
        self.sock.close()


def consume(
    source: ZmqSource, n_total: int, timeout_s: float = 20.0
) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Read chunks until ``n_total`` samples (in index space) arrived or the timeout."""
    chunks = []
    deadline = time.monotonic() + timeout_s
    for start, iq in source:
        chunks.append((start, iq.copy()))
        if start + iq.size >= n_total or time.monotonic() > deadline:
            break
    return chunks, source.stats().n_samples


def message_sizes(rng: np.random.Generator, n: int) -> list[int]:
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, 5000)))
    sizes[-1] -= sum(sizes) - n
    return sizes


@pytest.fixture
def signal() -> np.ndarray:
    rng = np.random.default_rng(5)
    return (rng.standard_normal(60_000) + 1j * rng.standard_normal(60_000)).astype(np.complex64)


@pytest.mark.parametrize("key", [None, b"lora"], ids=["raw", "key_frame"])
def test_zmq_sub_raw_messages_arrive_in_order(signal: np.ndarray, key: bytes | None) -> None:
    pub = GrPublisher()
    src = ZmqSource(pub.endpoint, fs_hz=FS_HZ, buffer_s=1.0, idle_timeout_s=IDLE_TIMEOUT_S)
    try:
        src._start()
        pub.wait_subscriber()
        pos = 0
        for size in message_sizes(np.random.default_rng(1), signal.size):
            msg = gr_message(signal[pos : pos + size])
            pub.send([key, msg] if key else [msg])
            pos += size
        chunks, n = consume(src, signal.size)
    finally:
        src.close()
        pub.close()
    got = np.concatenate([c for _, c in chunks])
    assert n == signal.size
    assert [s for s, _ in chunks][0] == 0
    np.testing.assert_array_equal(got, signal)
    assert src.stats().n_bad_frames == 0 and src.stats().n_lost_samples == 0


def test_zmq_tagged_messages_place_samples_by_offset_and_count_gaps(signal: np.ndarray) -> None:
    pub = GrPublisher()
    src = ZmqSource(pub.endpoint, fs_hz=FS_HZ, pass_tags=None, idle_timeout_s=IDLE_TIMEOUT_S)
    dropped = [(10_000, 13_000), (40_000, 40_500)]  # the "network" loses these item ranges
    pieces = [
        (0, 4000),
        (4000, 10_000),
        (10_000, 13_000),
        (13_000, 25_000),
        (25_000, 40_000),
        (40_000, 40_500),
        (40_500, 60_000),
    ]
    tags = [
        (0, pmt_symbol("rx_rate"), pmt_double(FS_HZ)),
        (0, pmt_symbol("rx_time"), pmt_tuple(pmt_uint64(12), pmt_double(0.25))),
        (0, pmt_symbol("rx_freq"), pmt_double(868.1e6)),
    ]
    try:
        src._start()
        pub.wait_subscriber()
        for i, (a, b) in enumerate(pieces):
            if (a, b) in dropped:
                continue
            extra = []
            if i == 3:
                extra = [
                    (a + 7, pmt_symbol("meta"), pmt_dict([(pmt_symbol("x"), pmt_int(3))])),
                    (a + 9, pmt_symbol("taps"), pmt_f32vector([0.5, 0.25, 1.0])),
                ]
            pub.send([gr_message(signal[a:b], offset=a, tags=tags if i == 0 else extra)])
        chunks, _ = consume(src, signal.size)
    finally:
        src.close()
        pub.close()
    stats = src.stats()
    for start, iq in chunks:  # every sample sits at its true index
        np.testing.assert_array_equal(iq, signal[start : start + iq.size])
    assert stats.n_lost_samples == 3000 + 500
    assert stats.n_gaps == 2 and stats.n_overflows == 2
    assert stats.n_samples == signal.size - 3500
    assert src.n_tags == 5
    assert src.center_freq_hz == pytest.approx(868.1e6)


def test_zmq_malformed_messages_are_counted_and_dropped_never_fatal(signal: np.ndarray) -> None:
    pub = GrPublisher("push")
    src = ZmqSource(pub.endpoint, fs_hz=FS_HZ, pattern="pull", idle_timeout_s=IDLE_TIMEOUT_S)
    good = [signal[:1000], signal[1000:3000], signal[3000:6000]]
    try:
        src._start()
        pub.send([gr_message(good[0])])
        pub.send([b"\x00" * 13])  # not a multiple of 8 bytes
        pub.send([struct.pack("<HBQQ", 0x5FF0, 1, 0, 5)])  # header announcing 5 tags that are not there
        pub.send([gr_message(good[1])])
        pub.send([gr_message(good[2][:10], offset=0)[:-3]])  # tagged, payload cut mid-item
        pub.send([gr_message(good[2])])
        chunks, _ = consume(src, 6000)
    finally:
        src.close()
        pub.close()
    got = np.concatenate([c for _, c in chunks])
    np.testing.assert_array_equal(got, signal[:6000])
    assert src.stats().n_bad_frames == 3


def test_tag_header_parser_matches_reference_bytes() -> None:
    msg = gr_message(
        np.ones(3, np.complex64),
        offset=123_456_789,
        tags=[(123_456_790, pmt_symbol("rx_freq"), pmt_double(433.92e6))],
    )
    assert msg[:3] == b"\xf0\x5f\x01"  # bytes GNU Radio puts on the wire
    header = parse_tag_header(msg)
    assert header.offset == 123_456_789
    assert header.tags == ((123_456_790, "rx_freq", 433.92e6),)
    assert len(msg) - header.payload_start == 3 * 8
    assert parse_tag_header(struct.pack("<HBQQ", 0x5FF0, 1, 7, 0)).payload_start == 19
    with pytest.raises(ValueError, match="magic"):
        parse_tag_header(struct.pack("<HBQQ", 0x1234, 1, 7, 0))
    with pytest.raises(ValueError):
        skip_pmt(b"\x02\x00\x09abc", 0)  # symbol shorter than its length
    with pytest.raises(ValueError, match="unknown"):
        skip_pmt(b"\x42", 0)


def test_zmq_source_requires_a_sample_rate() -> None:
    from lorarffi.errors import ConfigError

    with pytest.raises(ConfigError, match="fs_hz"):
        ZmqSource("tcp://127.0.0.1:1", fs_hz=None)
