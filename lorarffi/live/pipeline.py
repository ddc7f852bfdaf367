"""The live pipeline: source -> packet detector -> decision stage -> sinks, one decision per detected packet.

:class:`LivePipeline` reads chunks from a :class:`~lorarffi.capture.base.Source`, feeds a
:class:`~lorarffi.dsp.detect.StreamDetector` (which aligns each packet's preamble and removes its CFO),
hands the packets found in a chunk to the decision stage in one batch, and gives every sink one record per
packet. A jump in the source's indices (lost samples) flushes the detector and starts a fresh one at the new
index, so no packet is stitched across a gap and every ``start`` stays an absolute stream index.

The decision stage is pluggable (:class:`DecisionStage`): :class:`DetectionOnly` (no model),
:class:`ClassifierStage` (a trained model directory: spectrogram, CNN, CFO-gated hybrid decision), or any
object with ``decide(packets) -> list[dict]`` (enrollment registries and authenticators slot in here).

Latency of a decision is measured from the arrival of the packet's last preamble sample (when the source
received the run holding it, see :meth:`~lorarffi.capture.base.Source.arrival_time_s`) to the moment its
decision is made, in milliseconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lorarffi.capture.base import Source
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError
from lorarffi.live.sinks import Sink

__all__ = [
    "DecisionStage",
    "DetectionOnly",
    "ClassifierStage",
    "LatencyHistogram",
    "LiveSummary",
    "LivePipeline",
    "run_live",
    "stop_on_signals",
]

log = logging.getLogger(__name__)


class DecisionStage(Protocol):
    """Turns a batch of detected packets into one decision each.

    ``decide`` returns one dict per packet with at least ``device`` (int, -1 or None when unknown) and
    ``verdict`` (str); any other keys (``confidence``, ``cnn_device``...) are passed on to the sinks.
    """

    def decide(self, packets: Sequence[Any]) -> list[dict[str, Any]]: ...


class DetectionOnly:
    """No model: every packet is reported with ``device=None`` and ``verdict="detected"``."""

    def decide(self, packets: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"device": None, "verdict": "detected"} for _ in packets]


class ClassifierStage:
    """Decisions by a trained model directory (:func:`lorarffi.rffi.inference.load_classifier`).

    The batch's preambles (N, L) and CFO estimates go through the classifier in one call.
    """

    def __init__(self, classifier: Any) -> None:
        self.classifier = classifier

    def decide(self, packets: Sequence[Any]) -> list[dict[str, Any]]:
        if not packets:
            return []
        model_fs_hz = float(self.classifier.lora.fs_hz)
        if not math.isclose(float(packets[0].preamble_fs_hz), model_fs_hz, rel_tol=1e-9):
            raise ConfigError(
                f"the detector delivers preambles at {packets[0].preamble_fs_hz:g} Hz but the model "
                f"was trained at {model_fs_hz:g} Hz: use a sample rate matching the model"
            )
        preambles = np.stack([np.asarray(p.preamble, np.complex64) for p in packets])
        cfo_hz = np.array([p.cfo_hz for p in packets], np.float64)
        dec = self.classifier.classify(preambles, cfo_hz)
        out = []
        for rec in dec.to_records():
            rec.pop("cfo_hz", None)  # the packet's own field is reported
            out.append(rec)
        return out


class LatencyHistogram:
    """Latencies in ms, kept as a fixed histogram (constant memory however long the run).

    Bins of ``resolution_ms`` up to ``max_ms``; larger values land in the last bin (their maximum is kept).
    """

    def __init__(self, *, resolution_ms: float = 0.05, max_ms: float = 5000.0) -> None:
        self.resolution_ms = resolution_ms
        self._counts = np.zeros(int(math.ceil(max_ms / resolution_ms)) + 1, np.int64)
        self.n = 0
        self.max_ms = 0.0
        self._sum = 0.0

    def add(self, latency_ms: Sequence[float]) -> None:
        v = np.asarray(latency_ms, np.float64)
        if v.size == 0:
            return
        idx = np.clip((v / self.resolution_ms).astype(np.int64), 0, self._counts.size - 1)
        np.add.at(self._counts, idx, 1)
        self.n += v.size
        self.max_ms = max(self.max_ms, float(v.max()))
        self._sum += float(v.sum())

    def percentile(self, q: float) -> float:
        """The q-th percentile (0-100) in ms, to the bin's upper edge; NaN when empty."""
        if self.n == 0:
            return math.nan
        rank = max(1, int(math.ceil(q / 100.0 * self.n)))
        k = int(np.searchsorted(np.cumsum(self._counts), rank))
        if k >= self._counts.size - 1:
            return self.max_ms
        return min((k + 1) * self.resolution_ms, self.max_ms)

    @property
    def mean_ms(self) -> float:
        return self._sum / self.n if self.n else math.nan


@dataclass(frozen=True)
class LiveSummary:
    """What a live run did.

    Attributes
    ----------
    source : str
    n_samples : int
        Samples processed.
    stream_s : float
        Signal processed, in seconds (``n_samples / fs_hz``).
    wall_s : float
        Wall-clock duration of the run.
    n_packets : int
        Packets detected (= decisions made).
    verdicts : dict
        Decisions per verdict.
    devices : dict
        Decisions per device id (``"unknown"`` for rejected ones, ``"-"`` without a model).
    n_overflows, n_lost_samples, n_gaps, n_untimed_overflows, n_timeouts, n_bad_frames : int
        The source's counters (see :class:`~lorarffi.capture.base.SourceStats`).
    n_nonfinite : int
        Non-finite samples the detector replaced.
    latency_ms : dict
        ``p50``, ``p90``, ``p99``, ``max``, ``mean`` of the decision latency in ms (NaN without packets).
    """

    source: str
    fs_hz: float
    n_samples: int
    stream_s: float
    wall_s: float
    n_packets: int
    verdicts: dict[str, int] = field(default_factory=dict)
    devices: dict[str, int] = field(default_factory=dict)
    n_overflows: int = 0
    n_lost_samples: int = 0
    n_gaps: int = 0
    n_untimed_overflows: int = 0
    n_timeouts: int = 0
    n_bad_frames: int = 0
    n_nonfinite: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def realtime_factor(self) -> float:
        """Signal seconds processed per wall-clock second."""
        return self.stream_s / self.wall_s if self.wall_s > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["realtime_factor"] = self.realtime_factor
        return d

    def format(self) -> str:
        """A few human-readable lines."""
        lat = self.latency_ms
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(self.verdicts.items())) or "none"
        lines = [
            f"{self.source}: {self.n_samples:,} samples ({self.stream_s:.1f} s of signal) "
            f"in {self.wall_s:.1f} s "
            f"({self.realtime_factor:.1f}x real time)",
            f"packets: {self.n_packets} ({verdicts})",
            f"dropped samples: {self.n_lost_samples:,} in {self.n_gaps} gap(s); overflows {self.n_overflows} "
            f"(untimed {self.n_untimed_overflows}); timeouts {self.n_timeouts}; "
            f"bad frames {self.n_bad_frames}",
        ]
        if self.n_packets:
            lines.append(
                f"latency: p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms, "
                f"max {lat['max']:.1f} ms"
            )
        if set(self.devices) - {"-"}:  # a model decided (detection only reports no device)
            lines.append("devices: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.devices.items())))
        return "\n".join(lines)


def _shift(packet: Any, offset: int) -> Any:
    if offset == 0:
        return packet
    changes = {
        name: getattr(packet, name) + offset
        for name in ("start", "fingerprint_start", "stop")
        if hasattr(packet, name)
    }
    return dataclasses.replace(packet, **changes)


class LivePipeline:
    """source -> detector -> decision stage -> sinks.

    Parameters
    ----------
    source : Source
        Where the samples come from (closed by :meth:`run` at the end).
    cfg : LoRaConfig
        LoRa parameters to detect; ``fs_hz`` must equal the source's rate.
    decider : DecisionStage, optional
        Default :class:`DetectionOnly`.
    sinks : sequence of Sink
        Receive samples, decisions and progress; closed at the end with the summary.
    duration_s : float, optional
        Stop after this much signal (seconds of samples, not wall-clock).
    detector_factory : callable, optional
        ``cfg -> detector`` with ``process(chunk) -> list[Packet]`` and ``flush()`` (default
        :class:`~lorarffi.dsp.detect.StreamDetector` with blocks of ``block_s``).
    block_s : float
        Signal duration of the default detector's processing block, in s. A packet's decision waits for the
        block holding its SFD, so this bounds the added latency at real time (default 16 ms; the detector's
        own default, 65536 samples, is tuned for offline throughput).
    clock : callable
        Monotonic clock in seconds, shared with the source's arrival times.
    progress_period_s : float
        Sinks' :meth:`~lorarffi.live.sinks.Sink.on_progress` is called at most this often (wall clock).
    """

    def __init__(
        self,
        source: Source,
        cfg: LoRaConfig,
        *,
        decider: DecisionStage | None = None,
        sinks: Sequence[Sink] = (),
        duration_s: float | None = None,
        detector_factory: Callable[[LoRaConfig], Any] | None = None,
        block_s: float = 0.016,
        clock: Callable[[], float] = time.monotonic,
        progress_period_s: float = 0.25,
    ) -> None:
        if not math.isclose(cfg.fs_hz, source.fs_hz, rel_tol=1e-9):
            raise ConfigError(
                f"cfg.fs_hz={cfg.fs_hz:g} differs from the source's sample rate {source.fs_hz:g} Hz"
            )
        if duration_s is not None and not duration_s > 0:
            raise ConfigError(f"duration_s={duration_s!r} is not valid: give a positive duration in seconds")
        if detector_factory is None:
            from lorarffi.dsp.detect import StreamDetector

            if not block_s > 0:
                raise ConfigError(f"block_s={block_s!r} is not valid: give a positive duration in seconds")
            block_samples = max(1, int(round(block_s * cfg.integer_oversampling().fs_hz)))

            def detector_factory(c: LoRaConfig) -> StreamDetector:
                return StreamDetector(c, block_samples=block_samples)
        self.source = source
        self.cfg = cfg
        self.decider: DecisionStage = decider if decider is not None else DetectionOnly()
        self.sinks = list(sinks)
        self.duration_s = duration_s
        self._make_detector = detector_factory
        self._clock = clock
        self.progress_period_s = float(progress_period_s)
        # stream samples from a packet's fingerprint_start to its last preamble sample
        self._preamble_span = int(round(cfg.preamble_symbols * cfg.n_chips * cfg.fs_hz / cfg.bw_hz))
        self.latency = LatencyHistogram()
        self.verdicts: Counter[str] = Counter()
        self.devices: Counter[str] = Counter()
        self.n_packets = 0
        self.n_samples = 0
        self.n_nonfinite = 0

    # -- one batch of packets -> decisions -> sinks ------------------------------------------------------
    def _decide(self, packets: list[Any]) -> None:
        if not packets:
            return
        decisions = self.decider.decide(packets)
        t_decided = self._clock()
        if len(decisions) != len(packets):
            raise ConfigError(
                f"the decision stage returned {len(decisions)} decisions for {len(packets)} packets"
            )
        records = []
        lat = []
        for p, d in zip(packets, decisions, strict=True):
            last = int(p.fingerprint_start) + self._preamble_span - 1
            latency_ms = round(1e3 * max(0.0, t_decided - self.source.arrival_time_s(last)), 3)
            lat.append(latency_ms)
            device = d.get("device")
            rec: dict[str, Any] = {
                "start": int(p.start),
                "stop": int(p.stop),
                "fingerprint_start": int(p.fingerprint_start),
                "time_s": int(p.start) / self.source.fs_hz,
                "cfo_hz": float(p.cfo_hz),
                "snr_db": float(p.snr_db),
                "power_db": float(getattr(p, "power_db", math.nan)),
                "sync_word": int(getattr(p, "sync_word", -1)),
                "device": None if device is None else int(device),
                "verdict": str(d.get("verdict")),
                "latency_ms": latency_ms,
            }
            rec.update({k: v for k, v in d.items() if k not in rec})
            records.append(rec)
            self.verdicts[rec["verdict"]] += 1
            self.devices["-" if device is None else "unknown" if int(device) < 0 else str(int(device))] += 1
        self.latency.add(lat)
        self.n_packets += len(packets)
        for sink in self.sinks:
            sink.on_decisions(records, packets)

    def _status(self, t0: float) -> dict[str, Any]:
        st = self.source.stats()
        wall = max(self._clock() - t0, 1e-9)
        return {
            "source": self.source.name,
            "n_samples": self.n_samples,
            "rate_sps": self.n_samples / wall,
            "realtime_factor": self.n_samples / self.source.fs_hz / wall,
            "n_packets": self.n_packets,
            "n_overflows": st.n_overflows,
            "n_lost_samples": st.n_lost_samples,
            "latency_p99_ms": self.latency.percentile(99),
        }

    def run(self) -> LiveSummary:
        """Process the stream until it ends, :meth:`Source.stop` is called, or ``duration_s`` of signal."""
        source = self.source
        t0 = self._clock()
        limit = None if self.duration_s is None else int(round(self.duration_s * source.fs_hz))
        detector = None
        offset = 0  # stream index of the detector's sample 0
        expected = None
        first = None
        next_progress = t0
        try:
            for start, iq in source:
                if first is None:
                    first = start
                if limit is not None and start - first + iq.shape[0] >= limit:
                    iq = iq[: max(0, limit - (start - first))]
                if detector is None or start != expected:
                    if detector is not None:  # samples were lost: finish what lies before the gap
                        self._finish(detector, offset)
                    detector = self._make_detector(self.cfg)
                    offset = start
                if iq.shape[0]:
                    for sink in self.sinks:
                        sink.on_samples(start, iq)
                    packets = detector.process(iq)
                    self.n_samples += iq.shape[0]
                    expected = start + iq.shape[0]
                    if packets:
                        self._decide([_shift(p, offset) for p in packets])
                now = self._clock()
                if now >= next_progress:
                    next_progress = now + self.progress_period_s
                    status = self._status(t0)
                    for sink in self.sinks:
                        sink.on_progress(status)
                if limit is not None and expected is not None and expected - first >= limit:
                    break
            if detector is not None:
                self._finish(detector, offset)
        except BaseException:
            source.close()
            self._close_sinks(self.summary(self._clock() - t0))  # recorders still write their metadata
            raise
        source.close()
        summary = self.summary(self._clock() - t0)
        self._close_sinks(summary)
        return summary

    def _close_sinks(self, summary: LiveSummary) -> None:
        errors = []
        for sink in self.sinks:
            try:
                sink.close(summary.to_dict())
            except Exception as exc:  # noqa: BLE001 - close the others, then report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]

    def _finish(self, detector: Any, offset: int) -> None:
        self._decide([_shift(p, offset) for p in detector.flush()])
        self.n_nonfinite += int(getattr(detector, "n_nonfinite", 0))

    def summary(self, wall_s: float) -> LiveSummary:
        st = self.source.stats()
        lat = self.latency
        return LiveSummary(
            source=self.source.name,
            fs_hz=self.source.fs_hz,
            n_samples=self.n_samples,
            stream_s=self.n_samples / self.source.fs_hz,
            wall_s=wall_s,
            n_packets=self.n_packets,
            verdicts=dict(self.verdicts),
            devices=dict(self.devices),
            n_overflows=st.n_overflows,
            n_lost_samples=st.n_lost_samples,
            n_gaps=st.n_gaps,
            n_untimed_overflows=st.n_untimed_overflows,
            n_timeouts=st.n_timeouts,
            n_bad_frames=st.n_bad_frames,
            n_nonfinite=self.n_nonfinite,
            latency_ms={
                name: round(value, 3)
                for name, value in (
                    ("p50", lat.percentile(50)),
                    ("p90", lat.percentile(90)),
                    ("p99", lat.percentile(99)),
                    ("max", lat.max_ms if lat.n else math.nan),
                    ("mean", lat.mean_ms),
                )
            },
        )


def run_live(source: Source, cfg: LoRaConfig, **kwargs: Any) -> LiveSummary:
    """``LivePipeline(source, cfg, **kwargs).run()``."""
    return LivePipeline(source, cfg, **kwargs).run()


@contextlib.contextmanager
def stop_on_signals(source: Source) -> Iterator[None]:
    """Within the block, SIGINT (Ctrl-C) and SIGTERM stop ``source`` cleanly instead of killing the process.

    The stream then ends after its current chunk, so the pipeline drains, closes the device and writes its
    summary. A second Ctrl-C raises :class:`KeyboardInterrupt` as usual. Outside the main thread (where signal
    handlers cannot be set) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits = {"n": 0}

    def handler(signum: int, _frame: Any) -> None:
        hits["n"] += 1
        if hits["n"] > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("%s: stopping (%s)", source.name, signal.Signals(signum).name)
        source.stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
