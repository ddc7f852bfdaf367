"""The live pipeline loop: source -> packet detector -> decision stage -> sinks, one decision per packet.

:class:`LivePipeline` reads chunks from a :class:`~lorarffi.capture.base.Source`, feeds a
:class:`~lorarffi.dsp.detect.StreamDetector` (which aligns each packet's preamble and removes its CFO),
hands the packets found in a chunk to the decision stage (:mod:`lorarffi.live.stages`) in one batch, times
each decision, and gives every sink the batch's :class:`~lorarffi.live.decision.DecisionRecord` list. A jump
in the source's indices (lost samples) flushes the detector and starts a fresh one at the new index, so no
packet is stitched across a gap and every ``start`` stays an absolute stream index.

Latency of a decision is measured from the arrival of the packet's last preamble sample (when the source
received the run holding it, see :meth:`~lorarffi.capture.base.Source.arrival_time_s`) to the moment its
decision is made, in milliseconds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from lorarffi.capture.base import Source
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError
from lorarffi.live.decision import DecisionRecord
from lorarffi.live.sinks import Sink
from lorarffi.live.stages import DecisionStage, DetectionOnly
from lorarffi.live.stopping import chunks_within
from lorarffi.live.summary import DecisionCounts, LatencyHistogram, LiveSummary

__all__ = ["LivePipeline", "run_live"]

log = logging.getLogger(__name__)


def _shift(packet: Any, offset: int) -> Any:
    """The packet with its detector-relative indices moved to stream indices."""
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
        Default :class:`~lorarffi.live.stages.DetectionOnly`.
    sinks : sequence of Sink
        Receive samples, decisions and progress; drained when the stream ends (their queues delivered, so
        their counters in the summary are final), then closed with the summary.
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
        self.counts = DecisionCounts()
        self.n_samples = 0
        self.n_nonfinite = 0

    @property
    def n_packets(self) -> int:
        """Packets detected so far (one decision each)."""
        return self.counts.n_decisions

    # -- one batch of packets -> decisions -> sinks ------------------------------------------------------
    def _decide(self, packets: list[Any]) -> None:
        if not packets:
            return
        records = self.decider.decide(packets)
        t_decided = self._clock()
        if len(records) != len(packets):
            raise ConfigError(
                f"the decision stage returned {len(records)} decisions for {len(packets)} packets"
            )
        timed = [rec.timed(self._latency_ms(rec, t_decided)) for rec in records]
        self.latency.add([rec.latency_ms for rec in timed])
        self.counts.add(timed)
        for sink in self.sinks:
            sink.on_decisions(timed, packets)

    def _latency_ms(self, record: DecisionRecord, t_decided: float) -> float:
        """From the arrival of the record's last preamble sample to ``t_decided``, in ms (rounded to µs)."""
        last = record.fingerprint_start + self._preamble_span - 1
        return round(1e3 * max(0.0, t_decided - self.source.arrival_time_s(last)), 3)

    def _status(self, t0: float) -> dict[str, Any]:
        st = self.source.stats()
        wall = max(self._clock() - t0, 1e-9)
        return {
            "source": self.source.name,
            "n_samples": self.n_samples,
            "rate_sps": self.n_samples / wall,
            "realtime_factor": self.n_samples / self.source.fs_hz / wall,
            "n_packets": self.n_packets,
            "verdicts": dict(self.counts.verdicts),
            "devices": dict(self.counts.devices),
            "n_overflows": st.n_overflows,
            "n_lost_samples": st.n_lost_samples,
            "loss_observable": self.source.loss_unobservable_reason() is None,
            "latency_p99_ms": self.latency.percentile(99),
        }

    def run(self) -> LiveSummary:
        """Process the stream until it ends, :meth:`Source.stop` is called, or ``duration_s`` of signal."""
        source = self.source
        t0 = self._clock()
        detector = None
        offset = 0  # stream index of the detector's sample 0
        expected = None  # stream index of the sample that continues the detector's input
        next_progress = t0
        try:
            for start, iq in chunks_within(source, self.duration_s):
                if detector is None or start != expected:
                    if detector is not None:  # samples were lost: finish what lies before the gap
                        self._finish(detector, offset)
                    detector = self._make_detector(self.cfg)
                    offset = start
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
            if detector is not None:
                self._finish(detector, offset)
        except BaseException:
            source.close()
            self._close_sinks(self.summary(self._clock() - t0))  # recorders still write their metadata
            raise
        source.close()
        for sink in self.sinks:
            if hasattr(sink, "drain"):  # optional: sinks written before the call existed lack it
                sink.drain()
        summary = self.summary(self._clock() - t0)
        self._close_sinks(summary)
        return summary

    def _close_sinks(self, summary: LiveSummary) -> None:
        errors = []
        for sink in self.sinks:
            try:
                sink.close(summary)
            except Exception as exc:  # noqa: BLE001 - close the others, then report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]

    def _finish(self, detector: Any, offset: int) -> None:
        self._decide([_shift(p, offset) for p in detector.flush()])
        self.n_nonfinite += int(getattr(detector, "n_nonfinite", 0))

    def summary(self, wall_s: float) -> LiveSummary:
        """The run so far, ``wall_s`` seconds of wall clock after it started."""
        return LiveSummary(
            source=self.source.name,
            fs_hz=self.source.fs_hz,
            n_samples=self.n_samples,
            stream_s=self.n_samples / self.source.fs_hz,
            wall_s=wall_s,
            n_packets=self.n_packets,
            verdicts=dict(self.counts.verdicts),
            devices=dict(self.counts.devices),
            source_stats=self.source.stats(),
            n_nonfinite=self.n_nonfinite,
            latency_ms=self.latency.summary_ms(),
            loss_reason=self.source.loss_unobservable_reason(),
            sinks={
                name: counters
                for sink in self.sinks
                if hasattr(sink, "counters")
                for name, counters in sink.counters().items()
            },
        )


def run_live(source: Source, cfg: LoRaConfig, **kwargs: Any) -> LiveSummary:
    """``LivePipeline(source, cfg, **kwargs).run()``."""
    return LivePipeline(source, cfg, **kwargs).run()
