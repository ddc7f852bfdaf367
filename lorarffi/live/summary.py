"""What a live run did: decisions counted per verdict and device, the latency histogram, the run summary.

:class:`DecisionCounts` counts decisions as the pipeline makes them (the console view shows the same counts);
:class:`LatencyHistogram` keeps decision latencies in constant memory for percentiles; :class:`LiveSummary` is
the end-of-run report: its :meth:`~LiveSummary.to_dict` is the ``--json`` summary and its
:meth:`~LiveSummary.format` the text one.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lorarffi.capture.base import SourceStats
from lorarffi.live.decision import NO_MODEL_LABEL, DecisionRecord

__all__ = ["DecisionCounts", "LatencyHistogram", "LiveSummary"]

# SourceStats fields that the summary does not report as the source's: the pipeline counts the samples it
# processed itself, and the next index is no count.
_NOT_SUMMARISED = frozenset(("n_samples", "next_index"))


class DecisionCounts:
    """Decisions counted per verdict and per :attr:`~lorarffi.live.decision.DecisionRecord.device_label`."""

    def __init__(self) -> None:
        self.verdicts: Counter[str] = Counter()
        self.devices: Counter[str] = Counter()
        self.n_decisions = 0

    def add(self, records: Iterable[DecisionRecord]) -> None:
        for rec in records:
            self.verdicts[rec.verdict] += 1
            self.devices[rec.device_label] += 1
            self.n_decisions += 1


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

    def summary_ms(self) -> dict[str, float]:
        """``p50``, ``p90``, ``p99``, ``max``, ``mean`` in ms, rounded to µs (NaN when empty)."""
        return {
            name: round(value, 3)
            for name, value in (
                ("p50", self.percentile(50)),
                ("p90", self.percentile(90)),
                ("p99", self.percentile(99)),
                ("max", self.max_ms if self.n else math.nan),
                ("mean", self.mean_ms),
            )
        }


@dataclass(frozen=True)
class LiveSummary:
    """What a live run did.

    Attributes
    ----------
    source : str
    fs_hz : float
        Sample rate of the source, Hz.
    n_samples : int
        Samples processed (within ``duration_s``; the source may have delivered a few more).
    stream_s : float
        Signal processed, in seconds (``n_samples / fs_hz``).
    wall_s : float
        Wall-clock duration of the run.
    n_packets : int
        Packets detected (= decisions made).
    verdicts : dict
        Decisions per verdict.
    devices : dict
        Decisions per device label (``"unknown"`` for rejected ones, ``"-"`` without a model).
    source_stats : SourceStats
        The source's counters at the end (overflows, lost samples, gaps, timeouts, bad frames).
    loss_reason : str or None
        Why the loss counters may be short of what was really lost (raw ZeroMQ PUB/SUB carries no sequence
        numbers; overflows of unknown size), or None when every loss was counted
        (:meth:`~lorarffi.capture.base.Source.loss_unobservable_reason`). Reported as ``loss_observable``
        and ``loss_reason``.
    n_nonfinite : int
        Non-finite samples the detector replaced.
    latency_ms : dict
        ``p50``, ``p90``, ``p99``, ``max``, ``mean`` of the decision latency in ms (NaN without packets).
    sinks : dict
        Counters of the sinks that deliver over a network, by sink name (e.g. ``"mqtt"``: messages
        delivered, dropped because its queue was full, undelivered at the end).
    """

    source: str
    fs_hz: float
    n_samples: int
    stream_s: float
    wall_s: float
    n_packets: int
    verdicts: dict[str, int] = field(default_factory=dict)
    devices: dict[str, int] = field(default_factory=dict)
    source_stats: SourceStats = field(default_factory=SourceStats)
    n_nonfinite: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    loss_reason: str | None = None
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def loss_observable(self) -> bool:
        """True when every lost sample was counted (see ``loss_reason``)."""
        return self.loss_reason is None

    @property
    def realtime_factor(self) -> float:
        """Signal seconds processed per wall-clock second."""
        return self.stream_s / self.wall_s if self.wall_s > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        """Plain fields for JSON, the source's counters inline (``n_overflows``, ``n_lost_samples``...), then
        ``loss_observable`` and ``loss_reason``."""
        d: dict[str, Any] = {
            "source": self.source,
            "fs_hz": self.fs_hz,
            "n_samples": self.n_samples,
            "stream_s": self.stream_s,
            "wall_s": self.wall_s,
            "n_packets": self.n_packets,
            "verdicts": dict(self.verdicts),
            "devices": dict(self.devices),
        }
        d.update((k, v) for k, v in self.source_stats.to_dict().items() if k not in _NOT_SUMMARISED)
        d["loss_observable"] = self.loss_observable
        d["loss_reason"] = self.loss_reason
        d["n_nonfinite"] = self.n_nonfinite
        d["latency_ms"] = dict(self.latency_ms)
        d["realtime_factor"] = self.realtime_factor
        d["sinks"] = {name: dict(counters) for name, counters in self.sinks.items()}
        return d

    def to_json(self) -> str:
        """The ``--json`` summary line: ``{"type": "summary", "summary": to_dict()}``, non-finite floats as
        ``null`` (docs/cli.md)."""
        return json.dumps({"type": "summary", "summary": _finite(self.to_dict())})

    def format(self) -> str:
        """A few human-readable lines."""
        lat = self.latency_ms
        st = self.source_stats
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(self.verdicts.items())) or "none"
        lines = [
            f"{self.source}: {self.n_samples:,} samples ({self.stream_s:.1f} s of signal) "
            f"in {self.wall_s:.1f} s "
            f"({self.realtime_factor:.1f}x real time)",
            f"packets: {self.n_packets} ({verdicts})",
            f"dropped samples: {st.n_lost_samples:,} in {st.n_gaps} gap(s); overflows {st.n_overflows} "
            f"(untimed {st.n_untimed_overflows}); timeouts {st.n_timeouts}; "
            f"bad frames {st.n_bad_frames}",
        ]
        if self.loss_reason is not None:
            lines.append(f"loss accounting: not observable: {self.loss_reason}")
        if self.n_packets:
            lines.append(
                f"latency: p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms, "
                f"max {lat['max']:.1f} ms"
            )
        if set(self.devices) - {NO_MODEL_LABEL}:  # a model decided (detection only reports no device)
            lines.append("devices: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.devices.items())))
        for name, counters in self.sinks.items():
            lines.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counters.items()))
        return "\n".join(lines)


def _finite(obj: Any) -> Any:
    """A JSON-safe copy of nested dicts: non-finite floats become None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
