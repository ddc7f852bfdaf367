"""Where live decisions go: SigMF recorder, preamble writer, ZeroMQ PUB of decisions and alerts, JSONL file.

Every sink has the same calls, made by the live pipeline in its one thread:

- :meth:`Sink.on_samples` ``(start, iq)``: every chunk the source delivered (only recorders use it);
- :meth:`Sink.on_decisions` ``(records, packets)``: one :class:`~lorarffi.live.decision.DecisionRecord` per
  detected packet and the detector's packets in the same order;
- :meth:`Sink.on_progress` ``(status)``: periodic counters for displays;
- :meth:`Sink.drain` ``()``: the stream ended; deliver what is still queued (a bounded wait);
- :meth:`Sink.counters` ``()``: counters for the run summary (network sinks: delivered, dropped);
- :meth:`Sink.close` ``(summary)``: the :class:`~lorarffi.live.summary.LiveSummary` (None when the run did not
  start), then release files and sockets.

The console views are in :mod:`lorarffi.live.console`, the MQTT publisher in :mod:`lorarffi.live.mqtt_sink`.
Network endpoints bind to 127.0.0.1 unless the user names another address (:func:`bind_endpoint`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError, InputDataError
from lorarffi.live.decision import DecisionRecord
from lorarffi.live.summary import LiveSummary

if TYPE_CHECKING:
    from lorarffi.datasets.sigmf_io import SigMFRecorder

__all__ = [
    "Sink",
    "SigMFSink",
    "PreambleSink",
    "ZmqPublishSink",
    "JsonlSink",
    "bind_endpoint",
    "run_record",
]

log = logging.getLogger(__name__)


def bind_endpoint(text: str) -> str:
    """A ZeroMQ endpoint to bind: ``5556`` or ``tcp://:5556`` -> ``tcp://127.0.0.1:5556``; hosts named stay.

    Examples
    --------
    >>> bind_endpoint("5556"), bind_endpoint("tcp://*:5556"), bind_endpoint("ipc:///tmp/x")
    ('tcp://127.0.0.1:5556', 'tcp://*:5556', 'ipc:///tmp/x')
    """
    t = text.strip()
    if t.isdigit():
        _check_port(t, text)
        return f"tcp://127.0.0.1:{t}"
    if t.startswith("tcp://"):
        host, sep, port = t[len("tcp://") :].rpartition(":")
        if not sep or not port:
            raise ConfigError(
                f"endpoint {text!r} is not valid: use tcp://HOST:PORT (e.g. tcp://127.0.0.1:5556)"
            )
        if port != "*":
            _check_port(port, text)
        if not host:
            return f"tcp://127.0.0.1:{port}"
        return t
    if "://" not in t:
        raise ConfigError(
            f"endpoint {text!r} is not valid: use tcp://HOST:PORT, a port number, or ipc://PATH"
        )
    return t


def _check_port(port: str, text: str) -> None:
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"endpoint {text}: port {port} is not valid: use 1-65535 (0 or * picks a free port)"
        )


def run_record(command: Sequence[str] | str) -> dict[str, Any]:
    """The first line a run writes to a JSONL file it appends to, so the runs in one file can be told apart:
    ``{"type": "run", "run_id": <12 hex digits>, "time_utc": <ISO 8601>, "command": <command line>}``."""
    import datetime
    import uuid

    return {
        "type": "run",
        "run_id": uuid.uuid4().hex[:12],
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command if isinstance(command, str) else " ".join(command),
    }


class Sink:
    """Base class: every call is optional."""

    def on_samples(self, start: int, iq: npt.NDArray[np.complex64]) -> None:
        """A chunk of samples from the source (absolute index of ``iq[0]``)."""

    def on_decisions(self, records: Sequence[DecisionRecord], packets: Sequence[Any]) -> None:
        """Decisions made, one record per detected packet, with the detector's packets."""

    def on_progress(self, status: dict[str, Any]) -> None:
        """Periodic status (counters, rates, decisions per verdict and device) for displays."""

    def drain(self) -> None:
        """The stream ended: deliver what is still queued (a bounded wait), before the summary is made."""

    def counters(self) -> dict[str, dict[str, Any]]:
        """Counters for the run summary, under the sink's name (empty: nothing to report)."""
        return {}

    def close(self, summary: LiveSummary | None = None) -> None:
        """The run ended (``summary`` holds its counts); release resources."""


class SigMFSink(Sink):
    """Record the raw IQ as SigMF with one annotation per detected packet.

    Samples go to the ``.sigmf-data`` file in blocks (a crash loses at most the last block); the metadata is
    written atomically. Samples lost by the source are written as zeros, so a sample's position in the file
    is its stream index minus the first index, and annotations line up with the signal.

    Parameters
    ----------
    recorder : SigMFRecorder
        The recording to write (:class:`~lorarffi.datasets.sigmf_io.SigMFRecorder`, opened with the source's
        rate, centre frequency, start time and LoRa parameters); closed by :meth:`close`.
    max_zero_fill_s : float
        Longest gap written as zeros; a longer one ends the recording with an error in the log.
    """

    def __init__(self, recorder: SigMFRecorder, *, max_zero_fill_s: float = 10.0) -> None:
        self._recorder = recorder
        self.path = recorder.meta_path
        self.fs_hz = recorder.fs_hz
        self._first: int | None = None
        self._next: int | None = None
        self._max_fill = int(max_zero_fill_s * self.fs_hz)
        self.n_written = 0
        self.n_zero_filled = 0
        self._failed = False

    def on_samples(self, start: int, iq: npt.NDArray[np.complex64]) -> None:
        if self._failed:
            return
        if self._first is None:
            self._first = self._next = int(start)
        gap = int(start) - int(self._next)  # type: ignore[arg-type]
        if gap > 0:
            if gap > self._max_fill:
                log.error(
                    "%s: gap of %d samples is longer than max_zero_fill_s; recording stops here",
                    self.path,
                    gap,
                )
                self._failed = True
                return
            self._recorder.append(np.zeros(gap, np.complex64))
            self.n_zero_filled += gap
        self._recorder.append(iq)
        self.n_written += gap + iq.shape[0]
        self._next = int(start) + iq.shape[0]

    def on_decisions(self, records: Sequence[DecisionRecord], packets: Sequence[Any]) -> None:
        if self._first is None:
            return
        for rec in records:
            device = rec.known_device
            extra = {
                name: value
                for name, value in (
                    ("verdict", rec.verdict),
                    ("confidence", rec.confidence),
                    ("score", rec.score),
                    ("latency_ms", rec.latency_ms),
                )
                if value is not None
            }
            self._recorder.add_annotation(
                rec.start - self._first,
                rec.stop - rec.start,
                label=rec.verdict if device is None else f"device {device}",
                device_id=device,
                cfo_hz=rec.cfo_hz,
                snr_db=rec.snr_db,
                **extra,
            )

    def close(self, summary: LiveSummary | None = None) -> None:
        self._recorder.close()


class PreambleSink(Sink):
    """Append every detected packet's preamble to an HDF5 file in our schema (device id -1 when unknown).

    Parameters
    ----------
    path : path-like
    cfg : LoRaConfig
        The detector's configuration (the preambles' rate and length).
    source : str
        Where the packets came from (stored as provenance).
    fs_hz : float
        Sample rate of the stream (capture time of a packet = ``start_time + start / fs_hz``).
    start_time : datetime, optional
        UTC time of stream index 0; without it capture times are stored as unknown (NaN).
    provenance : dict, optional
        Stored with the file's source entry.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        cfg: LoRaConfig,
        *,
        source: str,
        fs_hz: float,
        start_time: Any = None,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        from lorarffi.datasets.native import PreambleWriter

        self._writer = PreambleWriter(path, cfg, source=source, provenance=provenance or {}, append=True)
        self.fs_hz = float(fs_hz)
        self.t0_epoch_s = math.nan if start_time is None else start_time.timestamp()
        self.n_written = 0

    def on_decisions(self, records: Sequence[DecisionRecord], packets: Sequence[Any]) -> None:
        if not packets:
            return
        pre = np.stack([p.preamble for p in packets]).astype(np.complex64, copy=False)
        ids = np.array([-1 if r.device is None else r.device for r in records], np.int64)
        starts = np.array([r.start for r in records], np.int64)
        self._writer.append(
            pre,
            ids,
            cfo_hz=np.array([r.cfo_hz for r in records], np.float64),
            snr_db=np.array([r.snr_db for r in records], np.float64),
            start=starts,
            capture_time_s=self.t0_epoch_s + starts / self.fs_hz,
        )
        self.n_written += len(packets)

    def close(self, summary: LiveSummary | None = None) -> None:
        self._writer.close()


class ZmqPublishSink(Sink):
    """Publish each decision as one JSON message on a ZeroMQ PUB socket (bound to 127.0.0.1 by default), and
    each alert (:attr:`~lorarffi.live.decision.DecisionRecord.is_alert`) once more under the topic ``alert``.

    A decision is one frame (``topic`` set: two, the topic then the JSON); an alert is always two frames,
    ``alert`` then the same JSON, sent after its decision. A SUB filter of ``alert`` receives the alerts only.

    Parameters
    ----------
    endpoint : str
        ``tcp://127.0.0.1:5556``, a port number, or an explicit ``tcp://HOST:PORT`` (``tcp://*:5556`` binds
        all interfaces, because the user said so). Port 0 picks a free port: see :attr:`endpoint`.
    topic : bytes
        Optional first frame of a decision (a SUB filter key); empty: single-frame decisions.
    """

    ALERT_TOPIC = b"alert"

    def __init__(self, endpoint: str, *, topic: bytes = b"") -> None:
        import zmq

        ep = bind_endpoint(endpoint)
        self._zmq = zmq
        self._sock = zmq.Context.instance().socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 500)
        try:
            if ep.endswith(":0"):
                self._sock.bind(ep[:-2] + ":*")
            else:
                self._sock.bind(ep)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise InputDataError(ep, f"cannot bind the decision publisher: {exc}") from None
        self.endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.topic = topic
        self.n_sent = 0
        self.n_alerts = 0

    def on_decisions(self, records: Sequence[DecisionRecord], packets: Sequence[Any]) -> None:
        for rec in records:
            payload = rec.to_json().encode()
            if self.topic:
                self._sock.send_multipart([self.topic, payload])
            else:
                self._sock.send(payload)
            self.n_sent += 1
            if rec.is_alert:
                self._sock.send_multipart([self.ALERT_TOPIC, payload])
                self.n_alerts += 1

    def close(self, summary: LiveSummary | None = None) -> None:
        self._sock.close()


class JsonlSink(Sink):
    """Write each decision as a JSON line to a file (or stdout with ``"-"``), optionally the summary last.

    Parameters
    ----------
    target : path-like or ``"-"`` or text stream
    summary : bool
        Also write the summary as a final ``{"summary": ...}`` line.
    run : dict, optional
        A first line marking the run (:func:`run_record`), so runs appended to one file stay apart.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | IO[str],
        *,
        summary: bool = False,
        run: dict[str, Any] | None = None,
    ) -> None:
        if hasattr(target, "write"):
            self._fh: IO[str] = target  # type: ignore[assignment]
            self._own = False
        elif str(target) == "-":
            self._fh = sys.stdout
            self._own = False
        else:
            try:
                self._fh = open(target, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise InputDataError(target, f"cannot open for writing: {exc.strerror or exc}") from None
            self._own = True
        self._summary = summary
        self.n_written = 0
        if run is not None:
            self._fh.write(json.dumps(run) + "\n")
            self._fh.flush()

    def on_decisions(self, records: Sequence[DecisionRecord], packets: Sequence[Any]) -> None:
        for rec in records:
            self._fh.write(rec.to_json() + "\n")
        self._fh.flush()
        self.n_written += len(records)

    def close(self, summary: LiveSummary | None = None) -> None:
        if self._summary and summary is not None:
            self._fh.write(summary.to_json() + "\n")
            self._fh.flush()
        if self._own:
            self._fh.close()
