"""A classifier worker: reads packets from the work queue, decides them with the live decision stages, stores
each decision, then acknowledges it (``lora-rffi worker``).

Loop: claim entries another consumer left pending longer than ``claim_idle_s`` (``XAUTOCLAIM``: a worker
that died), else read new ones (``XREADGROUP``, waiting at most ``poll_s``); a batch fills until
``batch_size`` entries or ``max_wait_s`` after its first entry (the latency bound), so the network sees the
batches it is fastest on. The batch is decided by the stage (:class:`~lorarffi.live.stages.RegistryStage`,
or :class:`~lorarffi.live.stages.ClassifierStage` without a registry: the decision code of ``lora-rffi
live``), each node's packets in one call. With a registry every decision goes to its audit log under the
packet's key ``NODE/RUN/START``, so a batch decided again (its worker died before acknowledging) is logged
once. Only then are the entries acknowledged and deleted (``XACK``, ``XDEL`` in one transaction).

Nothing is lost silently: an entry that cannot be decoded, a pending entry the stream's cap removed
(``XAUTOCLAIM`` reports it deleted) and every ``loss`` message of a node become loss records (verdict
:data:`LOST_VERDICT`) in the audit log and the counters. When the database or Redis fails the worker keeps
the batch, waits (``retry_min_s`` doubling to ``retry_max_s``) and tries again; nothing is acknowledged
before it is stored.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lorarffi.errors import ConfigError, InputDataError, ModelError
from lorarffi.live.decision import DecisionRecord
from lorarffi.live.queue import (
    QueueMessage,
    connect,
    decode_message,
    ensure_group,
    packet_key,
    parse_queue_url,
)
from lorarffi.live.sinks import Sink
from lorarffi.live.summary import DecisionCounts, LatencyHistogram

__all__ = ["QueueWorker", "WorkerSummary", "LOST_VERDICT", "default_consumer_name"]

log = logging.getLogger(__name__)

LOST_VERDICT = "lost"
"""Verdict of a loss record: a packet (or stream entry) that reached no decision, and why (its source)."""


def default_consumer_name() -> str:
    """``HOST-PID``: unique among the workers of a group."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerSummary:
    """What a worker did.

    Attributes
    ----------
    consumer : str
    stream : str
    n_entries : int
        Stream entries acknowledged.
    n_decisions : int
        Packets decided (a packet decided again after a crash counts again here, not in the audit log).
    n_claimed : int
        Entries taken over from other consumers (``XAUTOCLAIM``).
    n_lost : int
        Loss records written (undecodable entries, entries the cap removed, packets the nodes dropped).
    n_batches : int
    n_retries : int
        Batches tried again after a database or Redis failure.
    verdicts, devices : dict
        Decisions per verdict and device label.
    latency_ms : dict
        End to end, from the node's arrival of the packet's last preamble sample to its stored decision
        (node and worker clocks assumed in step): ``p50``, ``p90``, ``p99``, ``max``, ``mean``.
    queue_ms : dict
        From the node's detection to the worker's decision.
    wall_s : float
    """

    consumer: str
    stream: str
    n_entries: int = 0
    n_decisions: int = 0
    n_claimed: int = 0
    n_lost: int = 0
    n_batches: int = 0
    n_retries: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    devices: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    queue_ms: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in dataclasses.asdict(self).items()
        }


class QueueWorker:
    """Decide the packets of a Redis stream.

    Parameters
    ----------
    url : str
        ``redis://HOST:PORT/STREAM[?group=NAME]`` (:func:`~lorarffi.live.queue.parse_queue_url`).
    stage : DecisionStage
        :class:`~lorarffi.live.stages.RegistryStage` (decisions logged under their packet keys) or
        :class:`~lorarffi.live.stages.ClassifierStage`.
    registry : Registry, optional
        Where loss records go (default: the stage's registry, if it has one).
    consumer : str, optional
        This worker's name in the group (default :func:`default_consumer_name`).
    sinks : sequence of Sink
        Also receive the decisions (JSONL, ZeroMQ, MQTT); closed by :meth:`run`.
    batch_size : int
        Most entries per batch.
    max_wait_s : float
        Longest wait for a batch to fill after its first entry.
    poll_s : float
        Longest blocking read when the stream is empty.
    claim_idle_s : float
        Entries pending this long with another consumer are claimed.
    retry_min_s, retry_max_s : float
        Waits between attempts when the database or Redis fails.
    wall_clock : callable
        Seconds since the Unix epoch (latencies are measured against the nodes' clocks).
    """

    def __init__(
        self,
        url: str,
        stage: Any,
        *,
        registry: Any = None,
        consumer: str | None = None,
        sinks: Sequence[Sink] = (),
        batch_size: int = 32,
        max_wait_s: float = 0.02,
        poll_s: float = 0.5,
        claim_idle_s: float = 30.0,
        retry_min_s: float = 0.1,
        retry_max_s: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = parse_queue_url(url)
        self.stage = stage
        self.registry = registry if registry is not None else getattr(stage, "registry", None)
        if self.registry is not None:
            self.registry.audit_keys = True  # each packet's decision logged once
        self.consumer = consumer or default_consumer_name()
        self.sinks = list(sinks)
        self.batch_size = int(batch_size)
        self.max_wait_s = float(max_wait_s)
        self.poll_s = float(poll_s)
        self.claim_idle_s = float(claim_idle_s)
        self.retry_min_s = float(retry_min_s)
        self.retry_max_s = float(retry_max_s)
        self._wall_clock = wall_clock
        self._stop = threading.Event()
        self._client = connect(self.url)
        self.counts = DecisionCounts()
        self.latency = LatencyHistogram()
        self.queue_latency = LatencyHistogram()
        self.summary = WorkerSummary(self.consumer, str(self.url))
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    def stop(self) -> None:
        """Finish the batch in hand and return from :meth:`run` (thread-safe, signal-safe)."""
        self._stop.set()

    # -- reading -----------------------------------------------------------------------------------------
    def _claim(self) -> list[tuple[bytes, dict]]:
        """Entries pending longer than ``claim_idle_s`` with any consumer, now ours; loss records for pending
        entries the stream no longer holds."""
        reply = self._client.xautoclaim(
            self.url.stream,
            self.url.group,
            self.consumer,
            min_idle_time=int(self.claim_idle_s * 1000),
            start_id=self._claim_cursor,
            count=self.batch_size,
        )
        cursor, entries = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if self._claim_cursor == "0-0":  # scanned the whole pending list: wait before the next scan
            self._next_claim = time.monotonic() + min(self.claim_idle_s / 2, 5.0)
        if deleted:
            ids = [d.decode() if isinstance(d, bytes) else str(d) for d in deleted]
            self._store_losses(
                [(f"{self.url.stream}/{i}", None, "queue", "removed by the stream's cap while pending")
                 for i in ids]
            )  # fmt: skip
            self._client.xack(self.url.stream, self.url.group, *ids)
        self.summary.n_claimed += len(entries)
        if entries:
            log.info("claimed %d entr(y/ies) left pending by another worker", len(entries))
        return [(eid, fields) for eid, fields in entries if fields]

    def _read(
        self, block_s: float, own_pending: bool = False, count: int | None = None
    ) -> list[tuple[bytes, dict]]:
        reply = self._client.xreadgroup(
            self.url.group,
            self.consumer,
            {self.url.stream: "0" if own_pending else ">"},
            count=self.batch_size if count is None else count,
            block=None if own_pending else max(1, int(block_s * 1000)),
        )
        if not reply:
            return []
        return [(eid, fields) for eid, fields in reply[0][1] if fields]

    def _next_batch(self) -> list[tuple[bytes, dict]]:
        if time.monotonic() >= self._next_claim:
            claimed = self._claim()
            if claimed:
                return claimed
        batch = self._read(self.poll_s)
        if not batch:
            return []
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.batch_size and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            batch += self._read(left, count=self.batch_size - len(batch))
        return batch

    # -- deciding ----------------------------------------------------------------------------------------
    def _decide(self, messages: list[QueueMessage]) -> list[DecisionRecord | None]:
        """One stage call per node run, in arrival order. A registry stage logs each decision under the
        packet's key: its source is ``NODE/RUN`` and its registry keys rows by source and start sample.
        Packets the stage refuses (a configuration or model mismatch) get loss records and None."""
        by_run: dict[tuple[str, str], list[int]] = {}
        for i, m in enumerate(messages):
            by_run.setdefault((m.node, m.run), []).append(i)
        records: list[DecisionRecord | None] = [None] * len(messages)
        undecidable: list[tuple[str, int | None, str, str]] = []
        for (node, run), rows in by_run.items():
            if hasattr(self.stage, "source"):
                self.stage.source = f"{node}/{run}"
            try:
                got = self.stage.decide([messages[i].packet for i in rows])
            except (ConfigError, ModelError) as exc:  # e.g. the model needs a window the node did not send
                log.error("cannot decide %d packet(s) of %s/%s: %s", len(rows), node, run, exc)
                undecidable += [(messages[i].key, messages[i].packet.start, f"{node}/{run}",
                                 f"undecidable: {exc}") for i in rows]  # fmt: skip
                continue
            for i, rec in zip(rows, got, strict=True):
                records[i] = rec
        if undecidable:
            self._store_losses(undecidable)
        return records

    def _store_losses(self, losses: list[tuple[str, int | None, str, str]]) -> None:
        """Loss records ``(key, start_sample, source, why)``, in the registry when there is one (a key
        already logged, e.g. by an earlier report of the same loss, is not logged again)."""
        n_new = len(losses)
        if self.registry is not None:
            from lorarffi.rffi.registry import AuditRow

            n_new = self.registry.append_audit(
                [AuditRow(LOST_VERDICT, source=source, start_sample=start, packet_key=key)
                 for key, start, source, _ in losses]
            )  # fmt: skip
        if n_new:
            key, _, source, why = losses[0]
            log.warning("%d new loss record(s), e.g. %s (%s): %s", n_new, key, source, why)
        self.summary.n_lost += n_new

    def _process(self, batch: list[tuple[bytes, dict]]) -> None:
        messages: list[QueueMessage] = []
        losses: list[tuple[str, int | None, str, str]] = []
        for eid, fields in batch:
            try:
                msg = decode_message(fields)
            except (ValueError, KeyError, TypeError) as exc:
                name = eid.decode() if isinstance(eid, bytes) else str(eid)
                losses.append((f"{self.url.stream}/{name}", None, "queue", f"undecodable entry: {exc}"))
                continue
            if msg.kind == "preamble":
                messages.append(msg)
            elif msg.reason == "dropped":
                losses += [
                    (
                        packet_key(msg.node, msg.run, s),
                        s,
                        f"{msg.node}/{msg.run}",
                        "dropped by the node (buffer full)",
                    )
                    for s in msg.lost_starts
                ]
            else:
                losses += [
                    (f"{msg.node}/{msg.run}/{msg.reason}-{i}", None, f"{msg.node}/{msg.run}",
                     f"{msg.reason} before any worker read it")
                    for i in range(msg.n_lost)
                ]  # fmt: skip
        decided = self._decide(messages) if messages else []
        if losses:
            self._store_losses(losses)
        t_stored = self._wall_clock()
        timed = []
        messages = [m for m, r in zip(messages, decided, strict=True) if r is not None]
        records = [r for r in decided if r is not None]
        for msg, rec in zip(messages, records, strict=True):
            queue_ms = 1e3 * (t_stored - msg.detected_unix_s)
            node_ms = msg.node_latency_ms if math.isfinite(msg.node_latency_ms) else 0.0
            self.queue_latency.add([queue_ms])
            rec = rec.timed(round(max(0.0, node_ms + queue_ms), 3))
            if rec.channel_hz is None and rec.sf is None:
                rec = dataclasses.replace(rec, channel_hz=msg.channel_hz, sf=msg.sf)
            timed.append(rec)
        self.latency.add([r.latency_ms for r in timed])
        self.counts.add(timed)
        for sink in self.sinks:
            sink.on_decisions(timed, [m.packet for m in messages])
        self.summary.n_decisions += len(timed)

    def _ack(self, batch: list[tuple[bytes, dict]]) -> None:
        ids = [eid for eid, _ in batch]
        pipe = self._client.pipeline(transaction=True)
        pipe.xack(self.url.stream, self.url.group, *ids)
        pipe.xdel(self.url.stream, *ids)
        pipe.execute()
        self.summary.n_entries += len(ids)
        self.summary.n_batches += 1

    # -- the loop ----------------------------------------------------------------------------------------
    def _retrying(self, what: str, call: Callable[[], Any]) -> Any:
        """``call()`` until it succeeds or the worker is stopped (then re-raise)."""
        import redis
        from sqlalchemy.exc import DBAPIError, IntegrityError

        wait_s = self.retry_min_s
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, InputDataError,
                    DBAPIError) as exc:  # fmt: skip
                if self._stop.is_set() or isinstance(exc, IntegrityError):  # a broken constraint: a bug
                    raise
                self.summary.n_retries += 1
                log.warning("%s failed (%s); retrying in %.1f s", what, str(exc).splitlines()[0], wait_s)
                self._stop.wait(wait_s)
                wait_s = min(2 * wait_s, self.retry_max_s)

    def run(self, *, idle_exit_s: float | None = None, max_entries: int | None = None) -> WorkerSummary:
        """Work until :meth:`stop`, or until the stream has been empty for ``idle_exit_s``, or after
        ``max_entries`` entries. Returns the summary; closes the sinks."""
        t0 = time.monotonic()
        last_work = t0
        try:
            self._retrying("joining the consumer group", lambda: ensure_group(self._client, self.url))
            pending = self._retrying("reading own pending entries", lambda: self._read(0, own_pending=True))
            while not self._stop.is_set():
                batch = pending or self._retrying("reading the queue", self._next_batch)
                pending = []
                if not batch:
                    if idle_exit_s is not None and time.monotonic() - last_work >= idle_exit_s:
                        break
                    continue
                self._retrying("deciding and storing a batch", lambda b=batch: self._process(b))
                self._retrying("acknowledging a batch", lambda b=batch: self._ack(b))
                last_work = time.monotonic()
                if max_entries is not None and self.summary.n_entries >= max_entries:
                    break
        finally:
            for sink in self.sinks:
                if hasattr(sink, "drain"):
                    sink.drain()
                sink.close(None)
            self._client.close()
        s = self.summary
        s.verdicts = dict(self.counts.verdicts)
        s.devices = dict(self.counts.devices)
        s.latency_ms = self.latency.summary_ms()
        s.queue_ms = self.queue_latency.summary_ms()
        s.wall_s = time.monotonic() - t0
        return s
