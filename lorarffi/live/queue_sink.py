"""A capture node's end of the work queue: every detected packet becomes one Redis stream entry
(``lora-rffi live --detect-only --queue redis://HOST:PORT/STREAM --node-id NAME``).

The pipeline hands decisions to :class:`QueueSink`, which encodes each packet (:func:`~lorarffi.live.queue.
preamble_message`) into a bounded in-memory buffer; a sender thread appends the buffer to the stream in
batches, each batch one ``MULTI``/``EXEC`` transaction: ``XLEN``, one ``XADD ... MAXLEN ~ cap`` per entry,
``XLEN``. The two lengths tell exactly how many entries the cap removed; workers delete the entries they have
decided, so every removed entry was still undecided: it is counted (``n_capped``) and reported to the
workers in a ``loss`` message carrying the run's total so far, which they log as one loss record per entry
(keyed, so a later report supersedes one the cap removed in turn without adding records twice).

When Redis is unreachable the thread retries with a growing wait (``reconnect_min_s`` to
``reconnect_max_s``) while packets wait in the buffer; a packet that finds the buffer full is dropped and
counted, and its start sample goes to the workers in a ``loss`` message once Redis is back. A batch whose
reply was lost may be appended twice: workers log each packet once (its key ``NODE/RUN/START``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError
from lorarffi.live.decision import DecisionRecord
from lorarffi.live.queue import (
    connect,
    ensure_group,
    loss_message,
    parse_queue_url,
    preamble_message,
)
from lorarffi.live.sinks import Sink
from lorarffi.live.summary import LiveSummary

__all__ = ["QueueSink"]

log = logging.getLogger(__name__)


class QueueSink(Sink):
    """Append every detected packet to a Redis stream.

    Parameters
    ----------
    url : str
        ``redis://HOST:PORT/STREAM`` (:func:`~lorarffi.live.queue.parse_queue_url`).
    node_id : str
        This capture node's name, in every message.
    cfg : LoRaConfig
        What the node detects (spreading factor and bandwidth of its messages).
    center_freq_hz : float, optional
        The channel's centre frequency, for packets that carry none of their own.
    start_time : datetime, optional
        Absolute time of the stream's sample 0 (None: the wall clock when the sink was made).
    maxlen : int
        The stream's length cap (``MAXLEN ~``): entries beyond it are removed, counted and reported.
    buffer_size : int
        Packets held while Redis is unreachable; one more is dropped and counted.
    batch_size : int
        Most entries per transaction.
    drain_timeout_s : float
        Longest wait, when the stream ends, for the buffer to reach Redis.
    reconnect_min_s, reconnect_max_s : float
        First and longest wait between attempts while Redis is unreachable (doubling in between).
    with_cfo : bool
        Also send each packet's window as received (for workers whose model was trained without CFO
        compensation); doubles the message size.
    wall_clock : callable
        Seconds since the Unix epoch.
    """

    def __init__(
        self,
        url: str,
        *,
        node_id: str,
        cfg: LoRaConfig,
        center_freq_hz: float | None = None,
        start_time: _dt.datetime | None = None,
        maxlen: int = 2_000,
        buffer_size: int = 1_000,
        batch_size: int = 64,
        drain_timeout_s: float = 10.0,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 5.0,
        with_cfo: bool = False,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("maxlen", maxlen), ("buffer_size", buffer_size), ("batch_size", batch_size)):
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"{name}={value!r} is not valid: give 1 or more")
        if not node_id or "/" in node_id:
            raise ConfigError(f"node id {node_id!r} is not valid: give a non-empty name without '/'")
        self.url = parse_queue_url(url)
        self.node_id = node_id
        self.run_id = uuid.uuid4().hex[:12]
        self.cfg = cfg
        self.center_freq_hz = center_freq_hz
        self.with_cfo = bool(with_cfo)
        self._wall_clock = wall_clock
        self._t0_unix_s = wall_clock() if start_time is None else start_time.timestamp()
        self.maxlen = maxlen
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.drain_timeout_s = float(drain_timeout_s)
        self.reconnect_min_s = float(reconnect_min_s)
        self.reconnect_max_s = float(reconnect_max_s)
        self._buffer: deque[dict[str, bytes]] = deque()
        self._dropped_starts: list[int] = []  # dropped packets not yet reported to the workers
        self._capped_report_due = False
        self._cond = threading.Condition()
        self._seq = 0
        self._closing = False
        self.n_queued = 0  # packets offered
        self.n_sent = 0  # packets appended to the stream
        self.n_dropped = 0  # packets refused: the buffer was full
        self.n_capped = 0  # entries the length cap removed before a worker decided them
        self.n_disconnects = 0
        self._client = connect(self.url)
        self._thread = threading.Thread(target=self._send_loop, name="lorarffi-queue", daemon=True)
        self._thread.start()

    # -- the pipeline's side ---------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def on_decisions(self, records: Sequence[DecisionRecord], packets: Sequence[Any]) -> None:
        now = self._wall_clock()
        with self._cond:
            for rec, packet in zip(records, packets, strict=True):
                self.n_queued += 1
                if len(self._buffer) >= self.buffer_size:
                    self.n_dropped += 1
                    self._dropped_starts.append(int(packet.start))
                    if self.n_dropped == 1 or self.n_dropped % 1000 == 0:
                        log.warning(
                            "queue %s: %d packet(s) dropped so far (buffer of %d full)",
                            self.url,
                            self.n_dropped,
                            self.buffer_size,
                        )
                    continue
                self._buffer.append(
                    preamble_message(
                        packet,
                        node=self.node_id,
                        run=self.run_id,
                        seq=self._next_seq(),
                        time_unix_s=self._t0_unix_s + int(packet.start) / float(packet.fs_hz),
                        detected_unix_s=now,
                        node_latency_ms=rec.latency_ms,
                        channel_hz=rec.channel_hz if rec.channel_hz is not None else self.center_freq_hz,
                        sf=rec.sf if rec.sf is not None else self.cfg.sf,
                        bw_hz=self.cfg.bw_hz,
                        with_cfo=self.with_cfo,
                    )
                )
            self._cond.notify_all()

    # -- the sender thread -----------------------------------------------------------------------------------
    def _losses(self) -> list[dict[str, bytes]]:
        """``loss`` messages for what was dropped or capped since the last report (holding the lock)."""
        out = []
        if self._dropped_starts:
            out.append(
                loss_message(node=self.node_id, run=self.run_id, seq=self._next_seq(), reason="dropped",
                             starts=tuple(self._dropped_starts))
            )  # fmt: skip
        if self._capped_report_due:  # the run's total so far: a report the cap removes is superseded
            out.append(
                loss_message(node=self.node_id, run=self.run_id, seq=self._next_seq(), reason="capped",
                             n_lost=self.n_capped)
            )  # fmt: skip
        self._dropped_starts = []
        self._capped_report_due = False
        return out

    def _send(self, entries: list[dict[str, bytes]]) -> int:
        """Append ``entries`` in one transaction; returns how many entries the cap removed."""
        pipe = self._client.pipeline(transaction=True)
        pipe.xlen(self.url.stream)
        for fields in entries:
            pipe.xadd(self.url.stream, fields, maxlen=self.maxlen, approximate=True)
        pipe.xlen(self.url.stream)
        replies = pipe.execute()
        return max(0, replies[0] + len(entries) - replies[-1])

    def _send_loop(self) -> None:
        import redis

        wait_s = self.reconnect_min_s
        connected = False
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._buffer or self._dropped_starts or self._capped_report_due or self._closing
                )
                if self._closing and not (self._buffer or self._dropped_starts or self._capped_report_due):
                    return
                losses = self._losses()
                n_packets = min(len(self._buffer), self.batch_size)
                batch = losses + [self._buffer[i] for i in range(n_packets)]
            try:
                if not connected:
                    ensure_group(self._client, self.url)
                n_capped = self._send(batch)
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                with self._cond:  # the loss reports go out with the next attempt
                    self._unreport(losses)
                    if connected:
                        self.n_disconnects += 1
                        log.warning("queue %s: lost the connection (%s); retrying", self.url, exc)
                    connected = False
                    if self._closing and self._drain_expired():
                        return
                time.sleep(wait_s)
                wait_s = min(2 * wait_s, self.reconnect_max_s)
                continue
            if not connected:
                log.info("queue %s: connected", self.url)
            connected = True
            wait_s = self.reconnect_min_s
            with self._cond:
                for _ in range(n_packets):
                    self._buffer.popleft()
                self.n_sent += n_packets
                if n_capped:
                    self.n_capped += n_capped
                    self._capped_report_due = True
                    log.warning(
                        "queue %s: the length cap (%d) removed %d undecided entr(y/ies); %d so far",
                        self.url,
                        self.maxlen,
                        n_capped,
                        self.n_capped,
                    )
                self._cond.notify_all()

    def _unreport(self, losses: list[dict[str, bytes]]) -> None:
        """Take back loss reports that did not go out (called holding the lock)."""
        for msg in losses:
            if msg["reason"] == b"dropped":
                self._dropped_starts[:0] = [int(s) for s in msg["starts"].split(b",")]
            else:
                self._capped_report_due = True

    def _drain_expired(self) -> bool:
        return time.monotonic() >= getattr(self, "_drain_deadline", float("inf"))

    # -- end of the run --------------------------------------------------------------------------------------
    @property
    def n_undelivered(self) -> int:
        """Packets still in the buffer."""
        with self._cond:
            return len(self._buffer)

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until the buffer (and every loss report) has reached Redis, at most ``timeout_s`` (default
        ``drain_timeout_s``); True when nothing is left."""
        timeout = self.drain_timeout_s if timeout_s is None else float(timeout_s)
        self._drain_deadline = time.monotonic() + timeout
        with self._cond:
            return self._cond.wait_for(
                lambda: not (self._buffer or self._dropped_starts or self._capped_report_due), timeout
            )

    def counters(self) -> dict[str, dict[str, Any]]:
        """``{"queue": {...}}``: the stream, this node and run, packets offered, appended, dropped (buffer
        full), capped (removed by the length cap undecided), undelivered (still buffered), connections
        lost."""
        with self._cond:
            return {
                "queue": {
                    "stream": str(self.url),
                    "node_id": self.node_id,
                    "run": self.run_id,
                    "n_queued": self.n_queued,
                    "n_sent": self.n_sent,
                    "n_dropped": self.n_dropped,
                    "n_capped": self.n_capped,
                    "n_undelivered": len(self._buffer),
                    "n_disconnects": self.n_disconnects,
                }
            }

    def close(self, summary: LiveSummary | None = None) -> None:
        if not hasattr(self, "_drain_deadline"):
            self.drain()
        with self._cond:
            self._closing = True
            self._drain_deadline = min(getattr(self, "_drain_deadline", 0.0), time.monotonic())
            self._cond.notify_all()
        self._thread.join(self.reconnect_max_s + 10.0)
        c = self.counters()["queue"]
        if c["n_dropped"] or c["n_undelivered"] or c["n_capped"]:
            log.warning(
                "queue %s: of %d packet(s), %d dropped (buffer full), %d capped and %d never appended",
                self.url,
                c["n_queued"],
                c["n_dropped"],
                c["n_capped"],
                c["n_undelivered"],
            )
        self._client.close()
