"""Decision records end to end on a scripted run: the JSON lines (JSONL and ZeroMQ), the text lines, the SigMF
annotations and the summary are the ones expected for known packets, key order included; "unknown" is
counted once for the summary and the console; latency, stream indices after a gap, the duration limit.

The run: a source delivering 1,000-sample chunks at indices 5,000 and 6,000, then (13,000 samples lost) at
20,000, each with a known arrival time; a detector that reports packets at known detector-relative
indices (one in its first chunk, two when flushed at the gap, one after it); a clock fixed at 100.00325 s.
The expected values were written by hand from these numbers: ``start`` = packet index + the index the
detector started at (5,000, then 20,000 after the gap), ``time_s = start / 1e6``, ``latency_ms`` =
(100.00325 s - arrival of the run holding the packet's last preamble sample, 8,191 samples after its start,
among the runs seen when the decision is made) * 1e3, rounded to µs.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from lorarffi.capture.base import Source
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.packet import Packet
from lorarffi.live.console import ConsoleSink, TextSink
from lorarffi.live.decision import DecisionRecord
from lorarffi.live.pipeline import LivePipeline
from lorarffi.live.sinks import JsonlSink, Sink
from lorarffi.live.stages import ClassifierStage, DetectionOnly
from lorarffi.live.stopping import chunks_within
from lorarffi.live.summary import DecisionCounts, LatencyHistogram, LiveSummary

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
CLOCK_S = 100.00325


def packet(start: int, cfo_hz: float, snr_db: float, power_db: float, sync_word: int = 0x12) -> Packet:
    return Packet(
        start=start,
        fingerprint_start=start,
        cfo_hz=cfo_hz,
        snr_db=snr_db,
        power_db=power_db,
        preamble=np.ones(CFG.preamble_samples, np.complex64),
        preamble_fs_hz=1e6,
        sync_word=sync_word,
        n_preamble_symbols=8,
        stop=start + 12544,
        fs_hz=1e6,
    )


class ScriptedSource(Source):
    """1,000-sample chunks with their arrival times (monotonic s): at 5,000 and 6,000, then 13,000 samples
    lost, then ``n_after_gap`` chunks from 20,000 on."""

    name = "scripted"
    finite = True

    def __init__(self, n_after_gap: int = 1) -> None:
        super().__init__(fs_hz=1e6, center_freq_hz=868.1e6)
        self.n_after_gap = n_after_gap
        self.n_chunks_read = 0

    def _chunks(self):
        z = np.zeros(1000, np.complex64)
        runs = [(5000, 100.0), (6000, 100.001)]
        runs += [(20000 + 1000 * k, 100.002 + 0.001 * k) for k in range(self.n_after_gap)]
        for start, arrival_s in runs:
            self.n_chunks_read += 1
            yield start, z, ((start, arrival_s),)


class ScriptedDetector:
    """Detector 0 (before the gap) finds a packet at 100 in its first chunk and two (900, 950) when flushed;
    detector 1 (after the gap) finds one at 10 when flushed. Indices count from the detector's first
    sample."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.calls = 0
        self.n_nonfinite = 3

    def process(self, iq) -> list[Packet]:
        self.calls += 1
        if self.number == 0 and self.calls == 1:
            return [packet(100, 447.92, 24.5, -12.5)]
        return []

    def flush(self) -> list[Packet]:
        if self.number == 0:
            return [packet(900, -1500.25, 7.0, math.nan, sync_word=0x34), packet(950, 3.0, 11.0, -20.0)]
        return [packet(10, 12.5, 30.0, -3.0)]


class FakeClassifier:
    """Decides the packets it is given, in order: device 1, device 3, unknown, device 2 (the CNN alone: 2, 3,
    2, 2), as :meth:`lorarffi.rffi.inference.Classifier.classify_packets` reports them."""

    lora = CFG
    DEVICE = (1, 3, -1, 2)
    CNN = (2, 3, 2, 2)
    CONFIDENCE = (0.625, 0.75, 0.0, 0.5)

    def __init__(self) -> None:
        self.tracks: list[bool] = []
        self.seen = 0

    def classify(self, preambles, cfo_hz, *, track: bool = True) -> None:
        """The stage's warm-up: synthetic preambles of the model's length, never tracked."""
        assert preambles.shape[1] == self.lora.preamble_samples and not track

    def classify_packets(self, packets, *, track: bool = True):
        from lorarffi.rffi.inference import Decision

        self.tracks.append(track)
        cfo_hz = [p.cfo_hz for p in packets]
        k = slice(self.seen, self.seen + len(cfo_hz))
        self.seen += len(cfo_hz)
        device = np.array(self.DEVICE[k], np.int64)
        return Decision(
            device_id=device,
            verdict=["accept" if d >= 0 else "unknown" for d in device],
            cnn_device_id=np.array(self.CNN[k], np.int64),
            confidence=np.array(self.CONFIDENCE[k], np.float32),
            cnn_confidence=np.ones(device.size, np.float32),
            cfo_hz=np.asarray(cfo_hz, np.float64),
            class_index=device,
        )


class Collect(Sink):
    def __init__(self) -> None:
        self.records: list[DecisionRecord] = []
        self.statuses: list[dict] = []
        self.summary: LiveSummary | None = None

    def on_decisions(self, records, packets) -> None:
        self.records += records

    def on_progress(self, status) -> None:
        self.statuses.append(status)

    def close(self, summary=None) -> None:
        self.summary = summary


def scripted_run(decider, *sinks: Sink, **kw) -> tuple[LiveSummary, Collect]:
    made = iter(range(10))
    collect = Collect()
    summary = LivePipeline(
        kw.pop("source", None) or ScriptedSource(),
        CFG,
        decider=decider,
        sinks=[collect, *sinks],
        detector_factory=lambda cfg: ScriptedDetector(next(made)),
        clock=lambda: CLOCK_S,
        **kw,
    ).run()
    return summary, collect


# -- what users see ----------------------------------------------------------------------------------------
JSONL_DETECTED = [
    '{"start":5100,"stop":17644,"fingerprint_start":5100,"time_s":0.0051,"cfo_hz":447.92,"snr_db":24.5,'
    '"power_db":-12.5,"sync_word":18,"device":null,"verdict":"detected","latency_ms":3.25}',
    '{"start":5900,"stop":18444,"fingerprint_start":5900,"time_s":0.0059,"cfo_hz":-1500.25,"snr_db":7.0,'
    '"power_db":null,"sync_word":52,"device":null,"verdict":"detected","latency_ms":2.25}',
    '{"start":5950,"stop":18494,"fingerprint_start":5950,"time_s":0.00595,"cfo_hz":3.0,"snr_db":11.0,'
    '"power_db":-20.0,"sync_word":18,"device":null,"verdict":"detected","latency_ms":2.25}',
    '{"start":20010,"stop":32554,"fingerprint_start":20010,"time_s":0.02001,"cfo_hz":12.5,"snr_db":30.0,'
    '"power_db":-3.0,"sync_word":18,"device":null,"verdict":"detected","latency_ms":1.25}',
]
JSONL_CLASSIFIED = [
    '{"start":5100,"stop":17644,"fingerprint_start":5100,"time_s":0.0051,"cfo_hz":447.92,"snr_db":24.5,'
    '"power_db":-12.5,"sync_word":18,"device":1,"verdict":"accept","latency_ms":3.25,"cnn_device":2,'
    '"confidence":0.625}',
    '{"start":5900,"stop":18444,"fingerprint_start":5900,"time_s":0.0059,"cfo_hz":-1500.25,"snr_db":7.0,'
    '"power_db":null,"sync_word":52,"device":3,"verdict":"accept","latency_ms":2.25,"cnn_device":3,'
    '"confidence":0.75}',
    '{"start":5950,"stop":18494,"fingerprint_start":5950,"time_s":0.00595,"cfo_hz":3.0,"snr_db":11.0,'
    '"power_db":-20.0,"sync_word":18,"device":-1,"verdict":"unknown","latency_ms":2.25,"cnn_device":2,'
    '"confidence":0.0}',
    '{"start":20010,"stop":32554,"fingerprint_start":20010,"time_s":0.02001,"cfo_hz":12.5,"snr_db":30.0,'
    '"power_db":-3.0,"sync_word":18,"device":2,"verdict":"accept","latency_ms":1.25,"cnn_device":2,'
    '"confidence":0.5}',
]
TEXT_CLASSIFIED = [
    "t=    0.0051 s  start=       5100  accept   device 1    cfo=   +447.9 Hz  snr= 24.5 dB  "
    "latency=   3.2 ms",
    "t=    0.0059 s  start=       5900  accept   device 3    cfo=  -1500.2 Hz  snr=  7.0 dB  "
    "latency=   2.2 ms",
    "t=    0.0060 s  start=       5950  unknown  unknown     cfo=     +3.0 Hz  snr= 11.0 dB  "
    "latency=   2.2 ms",
    "t=    0.0200 s  start=      20010  accept   device 2    cfo=    +12.5 Hz  snr= 30.0 dB  "
    "latency=   1.2 ms",
]
TEXT_DETECTED_FIRST = (
    "t=    0.0051 s  start=       5100  detected -           cfo=   +447.9 Hz  snr= 24.5 dB  "
    "latency=   3.2 ms"
)
SUMMARY_CLASSIFIED = {  # without the wall-clock fields
    "source": "scripted",
    "fs_hz": 1000000.0,
    "n_samples": 3000,
    "stream_s": 0.003,
    "n_packets": 4,
    "verdicts": {"accept": 3, "unknown": 1},
    "devices": {"1": 1, "3": 1, "unknown": 1, "2": 1},
    "n_overflows": 0,
    "n_lost_samples": 13000,
    "n_gaps": 1,
    "n_untimed_overflows": 0,
    "n_timeouts": 0,
    "n_bad_frames": 0,
    "loss_observable": True,
    "loss_reason": None,
    "n_nonfinite": 6,
    "latency_ms": {"p50": 2.3, "p90": 3.25, "p99": 3.25, "max": 3.25, "mean": 2.25},
    "sinks": {},
}
SUMMARY_KEYS = [
    "source", "fs_hz", "n_samples", "stream_s", "wall_s", "n_packets", "verdicts", "devices", "n_overflows",
    "n_lost_samples", "n_gaps", "n_untimed_overflows", "n_timeouts", "n_bad_frames", "loss_observable",
    "loss_reason", "n_nonfinite", "latency_ms", "realtime_factor", "sinks",
]  # fmt: skip
SUMMARY_TEXT_CLASSIFIED = [
    "packets: 4 (accept 3, unknown 1)",
    "dropped samples: 13,000 in 1 gap(s); overflows 0 (untimed 0); timeouts 0; bad frames 0",
    "latency: p50 2.3 ms, p90 3.2 ms, p99 3.2 ms, max 3.2 ms",
    "devices: 1: 1, 2: 1, 3: 1, unknown: 1",
]
ANNOTATIONS_CLASSIFIED = [  # sample_start counts from the recording's first sample (stream index 5,000)
    {"core:label": "device 1", "core:sample_count": 12544, "core:sample_start": 100,
     "lorarffi:cfo_hz": 447.92, "lorarffi:confidence": 0.625, "lorarffi:device_id": 1,
     "lorarffi:latency_ms": 3.25, "lorarffi:snr_db": 24.5, "lorarffi:verdict": "accept"},
    {"core:label": "device 3", "core:sample_count": 12544, "core:sample_start": 900,
     "lorarffi:cfo_hz": -1500.25, "lorarffi:confidence": 0.75, "lorarffi:device_id": 3,
     "lorarffi:latency_ms": 2.25, "lorarffi:snr_db": 7.0, "lorarffi:verdict": "accept"},
    {"core:label": "unknown", "core:sample_count": 12544, "core:sample_start": 950, "lorarffi:cfo_hz": 3.0,
     "lorarffi:confidence": 0.0, "lorarffi:latency_ms": 2.25, "lorarffi:snr_db": 11.0,
     "lorarffi:verdict": "unknown"},
    {"core:label": "device 2", "core:sample_count": 12544, "core:sample_start": 15010,
     "lorarffi:cfo_hz": 12.5, "lorarffi:confidence": 0.5, "lorarffi:device_id": 2,
     "lorarffi:latency_ms": 1.25, "lorarffi:snr_db": 30.0, "lorarffi:verdict": "accept"},
]  # fmt: skip


def test_jsonl_lines_are_the_expected_ones_for_known_packets() -> None:
    for decider, expected in (
        (DetectionOnly(), JSONL_DETECTED),
        (ClassifierStage(FakeClassifier()), JSONL_CLASSIFIED),
    ):
        buf = io.StringIO()
        summary, collect = scripted_run(decider, JsonlSink(buf))
        assert buf.getvalue().splitlines() == expected  # the exact text: keys, their order, values
        assert summary.n_packets == len(expected)
    assert collect.records[0].to_dict() == {
        "start": 5100,
        "stop": 17644,
        "fingerprint_start": 5100,
        "time_s": 5100 / 1e6,
        "cfo_hz": 447.92,
        "snr_db": 24.5,
        "power_db": -12.5,
        "sync_word": 0x12,
        "device": 1,
        "verdict": "accept",
        "latency_ms": round(1e3 * (CLOCK_S - 100.0), 3),
        "cnn_device": 2,
        "confidence": 0.625,
    }


def test_a_record_omits_optional_fields_until_a_stage_sets_them() -> None:
    p = packet(100, 1.5, 20.0, -10.0)
    plain = DecisionRecord.for_packet(p, device=4, verdict="accept")
    assert list(plain.to_dict()) == [
        "start", "stop", "fingerprint_start", "time_s", "cfo_hz", "snr_db", "power_db", "sync_word", "device",
        "verdict", "latency_ms",
    ]  # fmt: skip
    full = DecisionRecord.for_packet(
        p, device=np.int64(4), verdict="rogue", score=np.float32(0.5), channel_hz=868.3e6, sf=np.int64(9)
    ).timed(1.5)
    d = json.loads(full.to_json())
    assert list(d)[-4:] == ["latency_ms", "score", "channel_hz", "sf"]
    assert (d["device"], d["verdict"], d["score"], d["channel_hz"], d["sf"]) == (4, "rogue", 0.5, 868.3e6, 9)
    assert json.loads(plain.to_json())["latency_ms"] is None  # untimed: NaN, written as null
    with pytest.raises(TypeError, match="no optional field"):
        DecisionRecord.for_packet(p, device=1, verdict="accept", sigma=2.0)


def test_text_lines_and_summary_text_are_the_expected_ones() -> None:
    text = io.StringIO()
    summary, _ = scripted_run(ClassifierStage(FakeClassifier()), TextSink(text))
    assert text.getvalue().splitlines() == TEXT_CLASSIFIED
    assert summary.format().splitlines()[1:] == SUMMARY_TEXT_CLASSIFIED
    text = io.StringIO()
    summary, _ = scripted_run(DetectionOnly(), TextSink(text))
    assert text.getvalue().splitlines()[0] == TEXT_DETECTED_FIRST
    assert not any(line.startswith("devices:") for line in summary.format().splitlines())


def test_summary_dict_and_json_line_are_the_expected_ones() -> None:
    summary, collect = scripted_run(ClassifierStage(FakeClassifier()))
    d = summary.to_dict()
    assert list(d) == SUMMARY_KEYS
    assert {k: v for k, v in d.items() if k not in ("wall_s", "realtime_factor")} == SUMMARY_CLASSIFIED
    assert collect.summary is summary  # the sinks were closed with it
    empty = LiveSummary(source="s", fs_hz=1e6, n_samples=0, stream_s=0.0, wall_s=0.0, n_packets=0)
    line = json.loads(empty.to_json())
    assert list(line) == ["type", "summary"] and line["summary"]["realtime_factor"] is None  # inf: not JSON
    buf = io.StringIO()
    sink = JsonlSink(buf, summary=True)
    sink.close(summary)
    assert json.loads(buf.getvalue()) == json.loads(summary.to_json())


def test_sigmf_annotations_are_the_expected_ones(tmp_path) -> None:
    from lorarffi.datasets.recording import open_recording
    from lorarffi.datasets.sigmf_io import SigMFRecorder
    from lorarffi.live.sinks import SigMFSink

    out = tmp_path / "run.sigmf-meta"
    scripted_run(ClassifierStage(FakeClassifier()), SigMFSink(SigMFRecorder(out, fs_hz=1e6)))
    with open_recording(out) as rec:
        assert rec.n_samples == 16_000  # 5,000 .. 21,000 with the 13,000 lost samples written as zeros
        assert rec.annotations == ANNOTATIONS_CLASSIFIED


def test_unknown_is_counted_once_and_shown_as_counted() -> None:
    from rich.console import Console

    records = ClassifierStage(FakeClassifier()).decide([packet(s, 0.0, 20.0, -10.0) for s in (1, 2, 3, 4)])
    assert [r.device_label for r in records] == ["1", "3", "unknown", "2"]
    assert [r.known_device for r in records] == [1, 3, None, 2]
    assert [r.device_label for r in DetectionOnly().decide([packet(1, 0.0, 20.0, -10.0)])] == ["-"]
    counts = DecisionCounts()
    counts.add(records)
    assert (counts.verdicts, counts.devices, counts.n_decisions) == (
        {"accept": 3, "unknown": 1},
        {"1": 1, "3": 1, "unknown": 1, "2": 1},
        4,
    )
    console = ConsoleSink("t", console=Console(file=io.StringIO(), width=100), refresh_hz=1e6)
    summary, collect = scripted_run(ClassifierStage(FakeClassifier()), console)
    assert collect.statuses[0]["devices"] == {"1": 1}  # the counts so far go to the view with each status
    view = Console(file=io.StringIO(), width=100)
    view.print(console.render())
    rows = [[c.strip() for c in line.split("│")[1:3]] for line in view.file.getvalue().splitlines()]
    shown = {r[0]: r[1] for r in rows if len(r) == 2 and r[1].isdigit()}
    assert shown == {"1": "1", "3": "1", "unknown": "1", "2": "1"}


def test_the_classifier_stage_feeds_drift_tracking_unless_told_not_to() -> None:
    for track in (True, False):
        clf = FakeClassifier()
        scripted_run(ClassifierStage(clf, track=track))
        assert clf.tracks == [track] * 3  # one call per batch: first chunk, flush at the gap, final flush
    clf = FakeClassifier()
    scripted_run(ClassifierStage(clf))
    assert clf.tracks == [True] * 3  # on by default


# -- latency, indices, duration ----------------------------------------------------------------------------
def test_latency_is_from_the_last_preamble_samples_arrival() -> None:
    _, collect = scripted_run(DetectionOnly())
    # packet 5,100: its last preamble sample 13,291 had not arrived; the latest run seen (5,000) came at 100.0
    # packets 5,900 and 5,950 (flushed at the gap): their last samples fall in the run from 6,000 (100.001)
    # packet 20,010: the run from 20,000 arrived at 100.002
    expected_s = [CLOCK_S - 100.0, CLOCK_S - 100.001, CLOCK_S - 100.001, CLOCK_S - 100.002]
    assert [r.latency_ms for r in collect.records] == [round(1e3 * t, 3) for t in expected_s]


def test_packets_after_a_gap_keep_absolute_indices_and_the_detector_restarts() -> None:
    summary, collect = scripted_run(DetectionOnly())
    assert [r.start for r in collect.records] == [5100, 5900, 5950, 20010]
    assert [r.stop - r.start for r in collect.records] == [12544] * 4
    assert [r.fingerprint_start for r in collect.records] == [5100, 5900, 5950, 20010]
    assert summary.n_nonfinite == 6  # both detectors' counts
    assert summary.source_stats.n_lost_samples == 13_000 and summary.source_stats.n_gaps == 1


def test_duration_cuts_the_stream_and_a_gap_across_the_limit_ends_the_run() -> None:
    source = ScriptedSource()
    summary, collect = scripted_run(DetectionOnly(), source=source, duration_s=0.0015)
    assert summary.n_samples == summary.to_dict()["n_samples"] == 1500  # 1,000 + 500 of the second chunk
    assert summary.source_stats.n_samples == 2000  # what the source delivered
    assert [r.start for r in collect.records] == [5100, 5900, 5950]  # flushed when the stream ended
    source = ScriptedSource(n_after_gap=5)
    summary, _ = scripted_run(DetectionOnly(), source=source, duration_s=0.010)  # limit 15,000: in the gap
    assert summary.n_samples == 2000 and source.n_chunks_read == 3  # the chunk past the limit ends the run
    assert [c[0] for c in chunks_within(ScriptedSource(), 0.002)] == [5000, 6000]
    assert [c[1].size for c in chunks_within(ScriptedSource(), None)] == [1000] * 3
    assert list(chunks_within(ScriptedSource(), 0.0)) == []
    for limit_s in (0.0015, 0.010):  # cut inside a chunk; a chunk past the limit
        source = ScriptedSource(n_after_gap=5)
        list(chunks_within(source, limit_s))
        assert source.stopping  # the producer is told to stop at the run's end, not only at close
    source = ScriptedSource()
    list(chunks_within(source, None))
    assert not source.stopping


def test_latency_histogram_percentiles_are_bin_upper_edges() -> None:
    h = LatencyHistogram(resolution_ms=0.1, max_ms=100.0)
    h.add(np.arange(1, 101, dtype=float))  # 1..100 ms
    # a percentile is the upper edge of the 0.1 ms bin holding its rank: within one bin above the value
    assert 50.0 <= h.percentile(50) <= 50.0 + 0.1 + 1e-9
    assert 99.0 <= h.percentile(99) <= 99.0 + 0.1 + 1e-9
    assert h.mean_ms == 50.5  # 5050 (a sum of small integers, exact in float64) / 100
    h.add([500.0])  # beyond max_ms: the last bin, and the maximum kept
    assert h.percentile(100) == 500.0 and h.max_ms == 500.0
    assert math.isnan(LatencyHistogram().percentile(50))
