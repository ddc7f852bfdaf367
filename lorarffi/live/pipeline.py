"""The live pipeline loop: source -> packet detector -> decision stage -> sinks, one decision per packet.

:class:`LivePipeline` reads chunks from a :class:`~lorarffi.capture.base.Source`, feeds a
:class:`~lorarffi.dsp.detect.StreamDetector` (which aligns each packet's preamble and removes its CFO),
hands the packets found in a chunk to the decision stage (:mod:`lorarffi.live.stages`) in one batch, times
each decision, and gives every sink the batch's :class:`~lorarffi.live.decision.DecisionRecord` list. A jump
in the source's indices (lost samples) flushes the detector and starts a fresh one at the new index, so no
packet is stitched across a gap and every ``start`` stays an absolute stream index.

With a :class:`~lorarffi.live.gateway.GatewayPlan` the detector is a
:class:`~lorarffi.live.gateway.GatewayDetector` (channelizer, one detector per channel and spreading factor)
and each decision carries ``channel_hz`` and ``sf``: packets whose fingerprint window is shared with another
packet of the same channel and SF get the verdict ``"collision"``, packets of an (SF, bandwidth) no decision
stage holds get ``"unsupported"``; both are counted like any verdict, never dropped.

Latency of a decision is measured from the arrival of the packet's last preamble sample (when the source
received the run holding it, see :meth:`~lorarffi.capture.base.Source.arrival_time_s`) to the moment its
decision is made, in milliseconds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lorarffi.capture.base import Source
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError
from lorarffi.live.decision import DecisionRecord
from lorarffi.live.gateway import GatewayDetector, GatewayPlan, TaggedPacket
from lorarffi.live.sinks import Sink
from lorarffi.live.stages import DecisionStage, DetectionOnly, warm_up
from lorarffi.live.stopping import chunks_within
from lorarffi.live.summary import DecisionCounts, LatencyHistogram, LiveSummary

__all__ = ["LivePipeline", "run_live", "COLLISION_VERDICT", "UNSUPPORTED_VERDICT"]

COLLISION_VERDICT = "collision"
"""Verdict of a packet whose fingerprint window holds another packet of its channel and spreading factor."""
UNSUPPORTED_VERDICT = "unsupported"
"""Verdict of a packet of an (SF, bandwidth) that no decision stage was trained for."""

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
    gateway : GatewayPlan, optional
        Listen to several channels of a wideband capture at several spreading factors (``cfg.sf`` is then
        only the SF of ``decider``); ``detector_factory`` is not used. None: one channel at ``cfg.sf``.
    deciders : mapping of (sf, bw_hz) to DecisionStage, optional
        Gateway only: the stage for each (SF, bandwidth) configuration. Default: ``decider`` for
        ``(cfg.sf, cfg.bw_hz)``, or detection only for every configuration when ``decider`` is None or
        :class:`~lorarffi.live.stages.DetectionOnly`. Packets of other configurations are ``"unsupported"``.
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
        gateway: GatewayPlan | None = None,
        deciders: Mapping[tuple[int, float], DecisionStage] | None = None,
    ) -> None:
        if not math.isclose(cfg.fs_hz, source.fs_hz, rel_tol=1e-9):
            raise ConfigError(
                f"cfg.fs_hz={cfg.fs_hz:g} differs from the source's sample rate {source.fs_hz:g} Hz"
            )
        if duration_s is not None and not duration_s > 0:
            raise ConfigError(f"duration_s={duration_s!r} is not valid: give a positive duration in seconds")
        if gateway is not None:
            if not block_s > 0:
                raise ConfigError(f"block_s={block_s!r} is not valid: give a positive duration in seconds")

            def detector_factory(c: LoRaConfig) -> GatewayDetector:
                return GatewayDetector(c, gateway, block_s=block_s)
        elif deciders is not None:
            raise ConfigError("deciders (one stage per SF and bandwidth) need a gateway plan")
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
        self.gateway = gateway
        if deciders is not None:
            self.deciders: dict[tuple[int, float], DecisionStage] | None = {
                (int(sf), float(bw)): stage for (sf, bw), stage in deciders.items()
            }
        elif isinstance(self.decider, DetectionOnly):
            self.deciders = None  # detection only: every configuration
        else:
            self.deciders = {(cfg.sf, float(cfg.bw_hz)): self.decider}
        self.detector_time_s: dict[str, float] = {}
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
    def _decide(self, found: list[Any], offset: int) -> None:
        if not found:
            return
        if self.gateway is None:
            packets = [_shift(p, offset) for p in found]
            records = self.decider.decide(packets)
        else:
            packets, records = self._decide_tagged(found, offset)
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

    def _decide_tagged(
        self, found: list[TaggedPacket], offset: int
    ) -> tuple[list[Any], list[DecisionRecord]]:
        """Gateway packets -> records: collisions and unsupported configurations get their verdict, the rest
        go to the stage of their (SF, bandwidth) in one batch per stage; every record carries its channel
        and SF."""
        packets = [_shift(t.packet, offset) for t in found]
        records: list[DecisionRecord | None] = [None] * len(found)
        batches: dict[tuple[int, float], list[int]] = {}
        bw_hz = float(self.cfg.bw_hz)
        for i, (t, p) in enumerate(zip(found, packets, strict=True)):
            if t.collided:
                records[i] = DecisionRecord.for_packet(p, device=None, verdict=COLLISION_VERDICT)
            elif self.deciders is not None and (t.sf, bw_hz) not in self.deciders:
                records[i] = DecisionRecord.for_packet(p, device=None, verdict=UNSUPPORTED_VERDICT)
            else:
                batches.setdefault((t.sf, bw_hz), []).append(i)
        for key, idx in batches.items():
            stage = self.decider if self.deciders is None else self.deciders[key]
            decided = stage.decide([packets[i] for i in idx])
            if len(decided) != len(idx):
                raise ConfigError(
                    f"the decision stage returned {len(decided)} decisions for {len(idx)} packets"
                )
            for i, rec in zip(idx, decided, strict=True):
                records[i] = rec
        tagged = [
            dataclasses.replace(rec, channel_hz=t.channel_hz, sf=t.sf)
            for rec, t in zip(records, found, strict=True)
        ]
        return packets, tagged

    def _latency_ms(self, record: DecisionRecord, t_decided: float) -> float:
        """From the arrival of the record's last preamble sample to ``t_decided``, in ms (rounded to µs)."""
        span = self._preamble_span
        if record.sf is not None and record.sf != self.cfg.sf:
            span = int(round(self.cfg.preamble_symbols * 2**record.sf * self.cfg.fs_hz / self.cfg.bw_hz))
        last = record.fingerprint_start + span - 1
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
        try:
            for stage in [self.decider, *(self.deciders or {}).values()]:
                warm_up(stage)
            ready = self._make_detector(self.cfg)  # its tables are built before the first samples arrive
            t0 = next_progress = self._clock()
            for start, iq in chunks_within(source, self.duration_s):
                if detector is None or start != expected:
                    if detector is not None:  # samples were lost: finish what lies before the gap
                        self._finish(detector, offset)
                    detector = ready if ready is not None else self._make_detector(self.cfg)
                    ready = None
                    offset = start
                for sink in self.sinks:
                    sink.on_samples(start, iq)
                found = detector.process(iq)
                self.n_samples += iq.shape[0]
                expected = start + iq.shape[0]
                if found:
                    self._decide(found, offset)
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
        self._decide(detector.flush(), offset)
        self.n_nonfinite += int(getattr(detector, "n_nonfinite", 0))
        for name, spent_s in getattr(detector, "time_s", {}).items():
            self.detector_time_s[name] = self.detector_time_s.get(name, 0.0) + spent_s

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
