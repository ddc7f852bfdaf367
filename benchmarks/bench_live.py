"""Soak of the live pipeline: 10 minutes at 10x real time from a 1 MS/s source.

A simulated 1 MS/s recording (4 devices of a fleet, SF7/125 kHz, packets at random times in noise) is replayed
in a loop by ``FileSource(speed=10)``: a producer thread releases the samples at ten times real time into the
ring buffer like a radio would, dropping (and counting) whatever the pipeline does not take in time. The full
pipeline runs on it: StreamDetector -> a model trained here on the same fleet -> hybrid decision -> sinks (a
JSONL file). Targets: zero dropped samples, exactly one decision per detected packet, resident memory flat
(+-10 % after warm-up), latency from a packet's last preamble sample to its decision p99 <= 50 ms.

Environment: ``LORARFFI_SOAK_S`` shortens the wall-clock duration (default 600 s) for development; the
recorded result is the full run. ``LORARFFI_SOAK_MODEL`` uses an existing model directory instead of
training one.
"""

from __future__ import annotations

import math
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

SPEED = 10.0
FS_HZ = 1e6
RECORDING_S = 30.0
N_DEVICES = 4
RSS_PERIOD_S = 5.0
WARMUP_S = 30.0


class _Monitor:
    """A sink that samples RSS and counts decisions (never writes per packet to the console)."""

    def __init__(self, clock=time.monotonic) -> None:
        import psutil

        self._proc = psutil.Process()
        self._clock = clock
        self.t0 = clock()
        self._next = self.t0
        self.rss: list[tuple[float, int]] = []
        self.n_records = 0
        self.n_packets = 0

    def on_samples(self, start, iq) -> None:
        pass

    def on_decisions(self, records, packets) -> None:
        self.n_records += len(records)
        self.n_packets += len(packets)

    def on_progress(self, status) -> None:
        now = self._clock()
        if now >= self._next:
            self.rss.append((now - self.t0, self._proc.memory_info().rss))
            self._next = now + RSS_PERIOD_S

    def close(self, summary=None) -> None:
        self.rss.append((self._clock() - self.t0, self._proc.memory_info().rss))


def _make_recording(path: pathlib.Path, cfg) -> tuple[int, int]:
    """Write RECORDING_S of simulated stream; returns (samples, packets transmitted)."""
    from lorarffi.sim import StreamSimulator, make_fleet

    sim = StreamSimulator(
        make_fleet(N_DEVICES, seed=0), cfg, seed=11, snr_db=(15.0, 30.0), mean_interval_s=0.3
    )
    n_total = int(RECORDING_S * FS_HZ)
    with open(path, "wb") as fh:
        made = 0
        while made < n_total:
            _, iq = sim.read(min(1 << 20, n_total - made))
            iq.tofile(fh)
            made += iq.size
    n_events = sum(1 for e in sim.events if e.start + e.n_samples <= n_total)
    return n_total, n_events


def _train_model(out: pathlib.Path, cfg) -> None:
    from lorarffi.rffi.train import TrainConfig, train
    from lorarffi.sim import Session, make_fleet, simulate_preamble_set

    ps = simulate_preamble_set(
        make_fleet(N_DEVICES, seed=0),
        cfg,
        60,
        session=Session(),
        rng=np.random.default_rng(3),
        snr_db=(15.0, 30.0),
    )
    train(ps.preambles, ps.device_ids, cfg, out, TrainConfig(epochs=4, batch_size=32, seed=0))


def _offline_count(path: pathlib.Path, cfg) -> int:
    """Packets the detector finds in one pass over the recording (the per-loop reference)."""
    from lorarffi.datasets.recording import open_recording
    from lorarffi.dsp.detect import StreamDetector

    det = StreamDetector(cfg)
    n = 0
    with open_recording(path, format="cf32", fs_hz=FS_HZ) as rec:
        for _, iq in rec.iter_chunks(1 << 18):
            n += len(det.process(iq))
    return n + len(det.flush())


def run() -> str:
    import torch

    from lorarffi.capture.file_source import FileSource
    from lorarffi.dsp.config import LoRaConfig
    from lorarffi.live.pipeline import LivePipeline
    from lorarffi.live.sinks import JsonlSink
    from lorarffi.live.stages import ClassifierStage
    from lorarffi.rffi.inference import load_classifier

    torch.set_num_threads(1)
    wall_s = float(os.environ.get("LORARFFI_SOAK_S", "600"))
    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=FS_HZ)
    with tempfile.TemporaryDirectory(prefix="lorarffi-soak-") as tmp:
        tmpd = pathlib.Path(tmp)
        rec_path = tmpd / "soak.cf32"
        n_rec, n_events = _make_recording(rec_path, cfg)
        per_loop = _offline_count(rec_path, cfg)
        model_dir = os.environ.get("LORARFFI_SOAK_MODEL")
        if not model_dir:
            model_dir = str(tmpd / "model")
            _train_model(pathlib.Path(model_dir), cfg)
        clf = load_classifier(model_dir)
        monitor = _Monitor()
        source = FileSource(
            rec_path, format="cf32", fs_hz=FS_HZ, speed=SPEED, loop=True, chunk_samples=8192, buffer_s=2.0
        )
        sinks = [monitor, JsonlSink(tmpd / "decisions.jsonl")]
        pipeline = LivePipeline(
            source,
            clf.lora.replace(fs_hz=FS_HZ),
            decider=ClassifierStage(clf),
            sinks=sinks,
            duration_s=wall_s * SPEED,
        )
        summary = pipeline.run()
        n_lines = sum(1 for _ in open(tmpd / "decisions.jsonl"))
    rss = np.array([r for t, r in monitor.rss if t >= min(WARMUP_S, wall_s / 4)], np.float64)
    rss_med = float(np.median(rss)) if rss.size else math.nan
    rss_dev = float(np.max(np.abs(rss - rss_med)) / rss_med) if rss.size else math.nan
    loops = summary.n_samples / n_rec
    expected = per_loop * loops
    lat = summary.latency_ms
    one_each = summary.n_packets == monitor.n_records == monitor.n_packets == n_lines
    checks = [
        (
            "dropped samples",
            "0",
            f"{summary.source_stats.n_lost_samples} ({summary.source_stats.n_overflows} overflows)",
            summary.source_stats.n_lost_samples == 0 and summary.source_stats.n_overflows == 0,
        ),
        (
            "one decision per detected packet",
            "equal",
            f"{summary.n_packets} packets, {monitor.n_records} decisions, {n_lines} JSON lines",
            one_each,
        ),
        (
            "packets vs offline detector",
            "~ loops x per-loop",
            f"{summary.n_packets} vs {expected:.0f} ({per_loop} per loop x {loops:.2f} loops)",
            abs(summary.n_packets - expected) <= per_loop + 1,
        ),
        (
            "RSS flat after warm-up",
            "+-10 %",
            f"max deviation {100 * rss_dev:.1f} % of {rss_med / 2**20:.0f} MiB",
            rss_dev <= 0.10,
        ),
        (
            "latency p99",
            "<= 50 ms",
            f"{lat['p99']:.1f} ms (p50 {lat['p50']:.1f}, max {lat['max']:.1f})",
            lat["p99"] <= 50.0,
        ),
        (
            "real-time factor",
            f"{SPEED:g}x",
            f"{summary.realtime_factor:.2f}x",
            summary.realtime_factor >= 0.97 * SPEED,
        ),
    ]
    rows = "\n".join(
        f"| {name} | {target} | {got} | {'yes' if ok else '**no**'} |" for name, target, got, ok in checks
    )
    rss_series = ", ".join(
        f"{t:.0f}s:{r / 2**20:.0f}" for t, r in monitor.rss[:: max(1, len(monitor.rss) // 12)]
    )
    return f"""Soak of `lora-rffi live`: {summary.wall_s:.0f} s wall clock at {SPEED:g}x real time from a
1 MS/s source ({summary.stream_s:.0f} s of signal, {summary.n_samples:,} samples): a {RECORDING_S:g} s
simulated recording ({N_DEVICES} devices, SF7/125 kHz, {n_events} packets per loop transmitted) replayed
in a loop by `FileSource(speed={SPEED:g}, loop=True)`, whose producer thread drops (and counts) runs the
pipeline does not take in time; StreamDetector, a model trained on the same fleet (hybrid decision),
JSONL sink.
One torch thread.

| check | target | measured | met |
|---|---|---|---|
{rows}

Verdicts: {dict(sorted(summary.verdicts.items()))}. RSS samples (s:MiB): {rss_series}.
Python {platform.python_version()} on {sys.platform}.

Reproduce: `python benchmarks/run.py --only live` (`LORARFFI_SOAK_S=60` for a shorter run).
"""


if __name__ == "__main__":
    print(run())
