"""Where live results go: SigMF recorder, preamble writer, ZeroMQ PUB of decisions, JSONL file, console view.

Every sink has the same three calls, made by the live pipeline in its one thread:

- :meth:`Sink.on_samples` ``(start, iq)``: every chunk the source delivered (only recorders use it);
- :meth:`Sink.on_decisions` ``(records, packets)``: one plain dict per detected packet (``start``, ``cfo_hz``,
  ``snr_db``, ``device``, ``verdict``, ``latency_ms``...) and the detector's packets in the same order;
- :meth:`Sink.close` ``(summary)``: the end-of-run summary (a dict), then release files and sockets.

Sinks take plain dicts, so :mod:`lorarffi.capture` stays below :mod:`lorarffi.rffi`. Network endpoints bind to
127.0.0.1 unless the user names another address (:func:`bind_endpoint`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError, InputDataError

__all__ = [
    "Sink",
    "SigMFSink",
    "PreambleSink",
    "ZmqPublishSink",
    "JsonlSink",
    "ConsoleSink",
    "bind_endpoint",
    "to_json",
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
        return f"tcp://127.0.0.1:{t}"
    if t.startswith("tcp://"):
        host, sep, port = t[len("tcp://") :].rpartition(":")
        if not sep or not port:
            raise ConfigError(
                f"endpoint {text!r} is not valid: use tcp://HOST:PORT (e.g. tcp://127.0.0.1:5556)"
            )
        if not host:
            return f"tcp://127.0.0.1:{port}"
        return t
    if "://" not in t:
        raise ConfigError(
            f"endpoint {text!r} is not valid: use tcp://HOST:PORT, a port number, or ipc://PATH"
        )
    return t


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def to_json(record: dict[str, Any]) -> str:
    """One decision as a compact JSON line (numpy scalars converted, non-finite floats as null)."""
    return json.dumps(
        {k: (_plain(v) if not isinstance(v, (str, int, bool, type(None))) else v) for k, v in record.items()},
        separators=(",", ":"),
        allow_nan=False,
    )


class Sink:
    """Base class: every call is optional."""

    def on_samples(self, start: int, iq: npt.NDArray[np.complex64]) -> None:
        """A chunk of samples from the source (absolute index of ``iq[0]``)."""

    def on_decisions(self, records: Sequence[dict[str, Any]], packets: Sequence[Any]) -> None:
        """Decisions made, one record per detected packet, with the detector's packets."""

    def on_progress(self, status: dict[str, Any]) -> None:
        """Periodic status (counters, rates) for displays."""

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """The run ended (``summary`` holds its counts); release resources."""


class SigMFSink(Sink):
    """Record the raw IQ as SigMF with one annotation per detected packet.

    Samples go to the ``.sigmf-data`` file in blocks (a crash loses at most the last block); the metadata is
    written atomically. Samples lost by the source are written as zeros, so a sample's position in the file
    is its stream index minus the first index, and annotations line up with the signal.

    Parameters
    ----------
    path : path-like
        ``OUT.sigmf-meta`` (or the base name).
    fs_hz, center_freq_hz : float
        Sample rate and centre frequency of the source.
    cfg : LoRaConfig, optional
        Stored in the metadata (``lorarffi:`` namespace) when given.
    start_time : datetime, optional
        Time of the first sample.
    description, hw : str
        ``core:description`` and ``core:hw``.
    max_zero_fill_s : float
        Longest gap written as zeros; a longer one ends the recording with an error in the log.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fs_hz: float,
        center_freq_hz: float | None = None,
        cfg: LoRaConfig | None = None,
        start_time: Any = None,
        description: str = "",
        hw: str = "",
        max_zero_fill_s: float = 10.0,
    ) -> None:
        from lorarffi.datasets.sigmf_io import SigMFRecorder

        self._recorder = SigMFRecorder(
            path,
            fs_hz=fs_hz,
            center_freq_hz=center_freq_hz,
            cfg=cfg,
            start_time=start_time,
            description=description,
            hw=hw,
        )
        self.path = path
        self.fs_hz = float(fs_hz)
        self._first: int | None = None
        self._next: int | None = None
        self._max_fill = int(max_zero_fill_s * fs_hz)
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

    def on_decisions(self, records: Sequence[dict[str, Any]], packets: Sequence[Any]) -> None:
        if self._first is None:
            return
        for rec in records:
            device = rec.get("device")
            label = rec.get("verdict", "packet") if device is None or device < 0 else f"device {device}"
            extra = {k: rec[k] for k in ("verdict", "confidence", "latency_ms") if rec.get(k) is not None}
            self._recorder.add_annotation(
                int(rec["start"]) - self._first,
                int(rec["stop"]) - int(rec["start"]),
                label=label,
                device_id=None if device is None or device < 0 else int(device),
                cfo_hz=rec.get("cfo_hz"),
                snr_db=rec.get("snr_db"),
                **extra,
            )

    def close(self, summary: dict[str, Any] | None = None) -> None:
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

    def on_decisions(self, records: Sequence[dict[str, Any]], packets: Sequence[Any]) -> None:
        if not packets:
            return
        pre = np.stack([p.preamble for p in packets]).astype(np.complex64, copy=False)
        ids = np.array([-1 if r.get("device") is None else int(r["device"]) for r in records], np.int64)
        starts = np.array([int(r["start"]) for r in records], np.int64)
        self._writer.append(
            pre,
            ids,
            cfo_hz=np.array([r["cfo_hz"] for r in records], np.float64),
            snr_db=np.array([r["snr_db"] for r in records], np.float64),
            start=starts,
            capture_time_s=self.t0_epoch_s + starts / self.fs_hz,
        )
        self.n_written += len(packets)

    def close(self, summary: dict[str, Any] | None = None) -> None:
        self._writer.close()


class ZmqPublishSink(Sink):
    """Publish each decision as one JSON message on a ZeroMQ PUB socket (bound to 127.0.0.1 by default).

    Parameters
    ----------
    endpoint : str
        ``tcp://127.0.0.1:5556``, a port number, or an explicit ``tcp://HOST:PORT`` (``tcp://*:5556`` binds
        all        interfaces, because the user said so). Port 0 picks a free port: see :attr:`endpoint`.
    topic : bytes
        Optional first frame (a SUB filter key); empty: single-frame messages.
    """

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

    def on_decisions(self, records: Sequence[dict[str, Any]], packets: Sequence[Any]) -> None:
        for rec in records:
            payload = to_json(rec).encode()
            if self.topic:
                self._sock.send_multipart([self.topic, payload])
            else:
                self._sock.send(payload)
            self.n_sent += 1

    def close(self, summary: dict[str, Any] | None = None) -> None:
        self._sock.close()


class JsonlSink(Sink):
    """Write each decision as a JSON line to a file (or stdout with ``"-"``), optionally the summary last.

    Parameters
    ----------
    target : path-like or ``"-"`` or text stream
    summary : bool
        Also write the summary as a final ``{"summary": ...}`` line.
    """

    def __init__(self, target: str | os.PathLike[str] | IO[str], *, summary: bool = False) -> None:
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

    def on_decisions(self, records: Sequence[dict[str, Any]], packets: Sequence[Any]) -> None:
        for rec in records:
            self._fh.write(to_json(rec) + "\n")
        self._fh.flush()
        self.n_written += len(records)

    def close(self, summary: dict[str, Any] | None = None) -> None:
        if self._summary and summary is not None:
            self._fh.write(json.dumps({"summary": summary}, default=_plain) + "\n")
            self._fh.flush()
        if self._own:
            self._fh.close()


class ConsoleSink(Sink):
    """A live console view (rich): sample rate, packets, accepted/unknown, per-device table, drops, latency.

    Refreshed at most ``refresh_hz`` times a second on stderr, so stdout stays free for results.

    Parameters
    ----------
    title : str
    refresh_hz : float
    console : rich.console.Console, optional
        Where to draw (default: stderr).
    clock : callable
        Monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        title: str = "lora-rffi live",
        *,
        refresh_hz: float = 4.0,
        console: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from rich.console import Console
        from rich.live import Live

        self.title = title
        self._console = console or Console(stderr=True)
        self._clock = clock
        self._period_s = 1.0 / refresh_hz
        self._last = -math.inf
        self._status: dict[str, Any] = {}
        self._devices: Counter[str] = Counter()
        self._verdicts: Counter[str] = Counter()
        self._latencies: list[float] = []
        self._live = Live(self.render(), console=self._console, auto_refresh=False, transient=False)
        self._live.start()

    def on_decisions(self, records: Sequence[dict[str, Any]], packets: Sequence[Any]) -> None:
        for rec in records:
            self._verdicts[str(rec.get("verdict"))] += 1
            dev = rec.get("device")
            self._devices["-" if dev is None else "unknown" if dev < 0 else str(dev)] += 1
            if rec.get("latency_ms") is not None:
                self._latencies.append(float(rec["latency_ms"]))
        self._latencies = self._latencies[-1000:]

    def on_progress(self, status: dict[str, Any]) -> None:
        self._status = status
        now = self._clock()
        if now - self._last >= self._period_s:
            self._last = now
            self._live.update(self.render(), refresh=True)

    def render(self) -> Any:
        """The current view as a rich renderable."""
        from rich.table import Table

        s = self._status
        head = Table.grid(padding=(0, 2))
        head.add_column(justify="right")
        head.add_column()
        rate = s.get("rate_sps")
        head.add_row("source", str(s.get("source", "")))
        head.add_row(
            "sample rate",
            "" if rate is None else f"{rate / 1e6:.2f} MS/s ({s.get('realtime_factor', 0):.1f}x real time)",
        )
        head.add_row("samples", f"{s.get('n_samples', 0):,}")
        head.add_row(
            "dropped samples", f"{s.get('n_lost_samples', 0):,} in {s.get('n_overflows', 0)} overflows"
        )
        head.add_row(
            "packets",
            f"{sum(self._verdicts.values()):,}  "
            + "  ".join(f"{v} {n:,}" for v, n in sorted(self._verdicts.items())),
        )
        if self._latencies:
            lat = np.asarray(self._latencies)
            head.add_row(
                "latency", f"p50 {np.percentile(lat, 50):.1f} ms  p99 {np.percentile(lat, 99):.1f} ms"
            )
        table = Table(title=self.title, show_lines=False)
        table.add_column("device")
        table.add_column("packets", justify="right")
        for dev, n in sorted(self._devices.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(dev, f"{n:,}")
        from rich.console import Group

        return Group(head, table)

    def close(self, summary: dict[str, Any] | None = None) -> None:
        self._live.update(self.render(), refresh=True)
        self._live.stop()
