"""The gateway configuration: 3 channels x SF7-12 from one 1 MS/s capture; real-time factor, drops, latency.

Run: ``.venv/bin/python benchmarks/run.py --only gateway`` (or this file directly: it prints the section).
Each measurement runs in a child process started with ``OMP_NUM_THREADS=1`` (and the OpenBLAS/MKL
equivalents) set before numpy is imported; the pipeline's two threads (source; detection and decisions) may
use both cores of the shared machine, whose load average is recorded beside every figure.

Traffic: a 1 MS/s capture centred on 868.3 MHz holding the three EU868 default channels (868.1, 868.3,
868.5 MHz). On every channel, packets one after another at random SF 7-12 (125 kHz, 8-symbol preamble, 8-16
payload symbols), CFO uniform in +-15 kHz, in-band SNR uniform in [0, 25] dB, exponential idle time (mean
0.3 s) between them: traffic on every channel all the time, overlapping across channels. The pipeline is the
live one (:class:`~lorarffi.live.pipeline.LivePipeline` with a
:class:`~lorarffi.live.gateway.GatewayPlan`), fed by :class:`~lorarffi.capture.file_source.FileSource`:

- unpaced (as fast as it goes): the real-time factor, and where the time goes (channelizer, each SF's
  detectors, collision check; the rest is the loop, the source thread and the decisions);
- paced at 3x real time (its producer thread drops and counts what the pipeline does not take in time):
  dropped samples at 3x;
- paced at real time: decision latency from a packet's last preamble up-chirp sample to its decision, and
  from the end of its SFD (the end of the preamble as Semtech's time-on-air counts it: up-chirps, sync word
  and 2.25 SFD symbols). A decision needs the SFD (it separates CFO from timing), which ends 4.25 symbols
  after the last up-chirp: 139 ms at SF12, 70 ms at SF11, 35 ms at SF10.

With ``--model``-style decisions (``LORARFFI_GATEWAY_MODEL``, default the cached default model of the
closed-set benchmark when present), the channels come at the model's rate (1 MS/s: no decimation) and SF7
packets go through the model, the other SFs are ``unsupported``.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

DURATION_S = 20.0
FS_HZ = 1e6
CENTER_HZ = 868.3e6
CHANNELS_HZ = (868.1e6, 868.3e6, 868.5e6)
SFS = (7, 8, 9, 10, 11, 12)
MEAN_IDLE_S = 0.3
BW_HZ = 125e3
PREAMBLE_SYMBOLS = 8
TARGET_X = 3.0
TARGET_P99_MS = 50.0
DEFAULT_MODEL = pathlib.Path("/work/bench_cache/default")


def make_recording(path: pathlib.Path, seed: int = 20261203) -> list[tuple[int, float, int]]:
    """Write the capture as cf32; returns the truth ``(start, channel_hz, sf)`` of every packet."""
    import numpy as np

    from lorarffi.dsp import LoRaConfig, packet_waveform

    rng = np.random.default_rng(seed)
    n = int(DURATION_S * FS_HZ)
    noise_in_band = 1.0
    sigma = math.sqrt(noise_in_band * FS_HZ / BW_HZ / 2)
    iq = (sigma * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)
    truth = []
    for ch in CHANNELS_HZ:
        pos = int(rng.exponential(MEAN_IDLE_S) * FS_HZ)
        while True:
            sf = int(rng.choice(SFS))
            cfg = LoRaConfig(sf=sf, bw_hz=BW_HZ, fs_hz=FS_HZ)
            snr_db = float(rng.uniform(0, 25))
            pk = packet_waveform(cfg, rng.integers(0, 2**sf, int(rng.integers(8, 17))),
                                 cfo_hz=float(rng.uniform(-15e3, 15e3)) + ch - CENTER_HZ,
                                 phase_rad=float(rng.uniform(0, 2 * np.pi)))
            if pos + pk.size >= n:
                break
            iq[pos : pos + pk.size] += (10 ** (snr_db / 20) * pk).astype(np.complex64)
            truth.append((pos, ch, sf))
            pos += pk.size + int(rng.exponential(MEAN_IDLE_S) * FS_HZ)
    iq.tofile(path)
    return sorted(truth)


class _Count:
    """A sink keeping each record's (start, channel, SF, verdict)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed or 1.0  # signal seconds per wall-clock second
        self.records: list[tuple[int, float, int, str]] = []
        self.latency_ms: dict[int, list[float]] = {}
        self.latency_sfd_ms: dict[int, list[float]] = {}

    def on_samples(self, start, iq) -> None:
        pass

    def on_decisions(self, records, packets) -> None:
        self.records += [(r.start, r.channel_hz, r.sf, r.verdict) for r in records]
        for r in records:
            self.latency_ms.setdefault(r.sf, []).append(r.latency_ms)
            up_end = r.fingerprint_start + PREAMBLE_SYMBOLS * 2**r.sf * FS_HZ / BW_HZ
            self.latency_sfd_ms.setdefault(r.sf, []).append(
                r.latency_ms - 1e3 * (r.stop - up_end) / FS_HZ / self.speed)

    def on_progress(self, status) -> None:
        pass

    def close(self, summary=None) -> None:
        pass


def _child(path: str, truth_path: str, speed: float, model_dir: str) -> dict:
    import time

    import numpy as np

    from lorarffi.capture.file_source import FileSource
    from lorarffi.dsp import LoRaConfig
    from lorarffi.live.gateway import GatewayPlan
    from lorarffi.live.pipeline import LivePipeline

    truth = [tuple(t) for t in json.loads(pathlib.Path(truth_path).read_text())]
    decider, decimation = None, None
    cfg = LoRaConfig(sf=7, bw_hz=BW_HZ, fs_hz=FS_HZ)
    if model_dir:
        import torch

        from lorarffi.live.stages import ClassifierStage
        from lorarffi.rffi.inference import load_classifier

        torch.set_num_threads(1)
        clf = load_classifier(model_dir)
        decider = ClassifierStage(clf)
        cfg = clf.lora.replace(fs_hz=FS_HZ)
        decimation = int(round(FS_HZ / clf.lora.fs_hz))
    load_before = os.getloadavg()[0]
    source = FileSource(path, format="cf32", fs_hz=FS_HZ, center_freq_hz=CENTER_HZ, speed=speed or None,
                        chunk_samples=8192 if speed else 1 << 16, buffer_s=2.0)
    sink = _Count(speed)
    pipe = LivePipeline(source, cfg, decider=decider, sinks=[sink],
                        gateway=GatewayPlan(CENTER_HZ, CHANNELS_HZ, SFS, decimation))
    t0 = time.perf_counter()
    c0 = time.process_time()
    summary = pipe.run()
    wall_s = time.perf_counter() - t0
    cpu_s = time.process_time() - c0
    found = 0
    wrong = 0
    for start, ch, sf, _ in sink.records:
        hit = any(abs(start - s) <= 8 and (c, f) == (ch, sf) for s, c, f in truth)
        found += hit
        wrong += not hit
    return {
        "speed": speed,
        "model": model_dir,
        "decimation": decimation,
        "stream_s": summary.stream_s,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "x_realtime": summary.stream_s / wall_s,
        "n_lost_samples": summary.source_stats.n_lost_samples,
        "n_overflows": summary.source_stats.n_overflows,
        "n_sent": len(truth),
        "n_decisions": len(sink.records),
        "n_found": found,
        "n_wrong": wrong,
        "verdicts": summary.verdicts,
        "latency_ms": summary.latency_ms,
        "latency_by_sf_ms": {
            sf: [float(np.percentile(v, 50)), float(np.percentile(v, 99)), len(v)]
            for sf, v in sorted(sink.latency_ms.items())
        },
        "latency_sfd_ms": _percentiles([x for v in sink.latency_sfd_ms.values() for x in v]),
        "latency_sfd_by_sf_ms": {
            sf: [float(np.percentile(v, 50)), float(np.percentile(v, 99)), len(v)]
            for sf, v in sorted(sink.latency_sfd_ms.items())
        },
        "time_s": pipe.detector_time_s,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def _percentiles(v: list[float]) -> dict[str, float]:
    import numpy as np

    if not v:
        return {}
    return {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)), "max": float(np.max(v))}


def _run_child(path, truth_path, speed, model_dir, env) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path), str(truth_path), str(speed), model_dir or ""],
        env=env, capture_output=True, text=True, check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _breakdown(r: dict) -> str:
    t = r["time_s"]
    parts = [f"channelizer {t.get('channelize', 0):.2f} s"]
    parts += [f"SF{sf} {t.get(f'detect_sf{sf}', 0):.2f} s" for sf in SFS]
    parts.append(f"collision check {t.get('collision', 0):.3f} s")
    rest = r["cpu_s"] - sum(t.values())
    parts.append(f"rest of the process's {r['cpu_s']:.2f} s CPU (source thread, loop, decisions) "
                 f"{rest:.2f} s")
    return "; ".join(parts)


def _table(title: str, rows: list[dict]) -> str:
    out = [f"**{title}**\n", "| run | measure | value | load average (1 min, before / after) |",
           "|---|---|---|---|"]
    for r in rows:
        load = f"{r['load_before']:.1f} / {r['load_after']:.1f}"
        name = "unpaced" if not r["speed"] else f"paced {r['speed']:g}x"
        lat = r["latency_ms"]
        if not r["speed"]:
            met = "met" if r["x_realtime"] >= TARGET_X else "NOT met"
            out.append(f"| {name} | **real-time factor (wall clock)** | **{r['x_realtime']:.1f}x** "
                       f"(target >= {TARGET_X:g}x: {met}); CPU {r['cpu_s']:.1f} s for {r['stream_s']:.0f} s "
                       f"of signal | {load} |")
            out.append(f"| {name} | where the time goes (CPU of the pipeline thread; wall "
                       f"{r['wall_s']:.1f} s) | {_breakdown(r)} | {load} |")
        else:
            out.append(f"| {name} | dropped samples | {r['n_lost_samples']} ({r['n_overflows']} overflows) "
                       f"| {load} |")
            lsfd = r.get("latency_sfd_ms", {})
            target = ""
            if r["speed"] == 1:
                met = "met" if lsfd.get("p99", math.inf) <= TARGET_P99_MS else "NOT met"
                target = f" (target p99 <= {TARGET_P99_MS:g} ms at real time: {met})"
            out.append(f"| {name} | **latency from the preamble's last sample (the SFD's end)**, p50 / p99 / "
                       f"max | {lsfd.get('p50', math.nan):.1f} / {lsfd.get('p99', math.nan):.1f} / "
                       f"{lsfd.get('max', math.nan):.1f} ms{target} | {load} |")
            out.append(f"| {name} | latency from the last up-chirp sample (4.25 symbols earlier), p50 / p99 "
                       f"/ max | {lat.get('p50', math.nan):.1f} / {lat.get('p99', math.nan):.1f} / "
                       f"{lat.get('max', math.nan):.1f} ms | {load} |")
        out.append(f"| {name} | packets: sent / decided / matched (start within 8 samples, right channel "
                   f"and SF) / other | {r['n_sent']} / {r['n_decisions']} / {r['n_found']} / {r['n_wrong']} "
                   f"| {load} |")
        out.append(f"| {name} | verdicts | {json.dumps(r['verdicts'], sort_keys=True)} | {load} |")
        if r["speed"]:
            by_sf = ", ".join(f"SF{sf}: {v[0]:.0f} / {v[1]:.0f} ms ({v[2]})"
                              for sf, v in r["latency_by_sf_ms"].items())
            out.append(f"| {name} | latency from the last up-chirp sample, p50 / p99 per SF (packets) | "
                       f"{by_sf} | {load} |")
            by_sf = ", ".join(f"SF{sf}: {v[0]:.0f} / {v[1]:.0f} ms"
                              for sf, v in r.get("latency_sfd_by_sf_ms", {}).items())
            out.append(f"| {name} | latency from the SFD's end, p50 / p99 per SF | {by_sf} | {load} |")
    return "\n".join(out) + "\n"


def run() -> str:
    import tempfile

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    model_dir = os.environ.get("LORARFFI_GATEWAY_MODEL") or (
        str(DEFAULT_MODEL) if (DEFAULT_MODEL / "config.json").exists() else ""
    )
    parts = [
        f"The live pipeline listening to {len(CHANNELS_HZ)} channels (868.1, 868.3, 868.5 MHz) x SF "
        f"{SFS[0]}-{SFS[-1]} of one {DURATION_S:g} s, 1 MS/s capture with traffic on every channel (random "
        f"SF, in-band SNR 0-25 dB, CFO +-15 kHz, mean idle {MEAN_IDLE_S:g} s between packets of a channel), "
        "fed by `FileSource` (unpaced; paced at 3x and 1x real time, its producer dropping and counting what "
        "is not taken in time). Children with `OMP_NUM_THREADS=1`; the machine (2 cores) was shared with "
        "other jobs: the load average is beside every figure. Latency is measured from the preamble's last "
        "sample, the end of its SFD (Semtech's preamble is the programmed up-chirps plus 4.25 symbols: sync "
        "word and 2.25 SFD symbols; the SX127x datasheets count its length so), and from the last up-chirp. "
        "A packet cannot be aligned before its SFD, which ends 4.25 symbols after the last up-chirp (35 ms "
        "at SF10, 70 ms at SF11, 139 ms at SF12): from the last up-chirp no 50 ms bound can hold above SF9 "
        "([live.md](live.md)).\n"
    ]
    with tempfile.TemporaryDirectory(prefix="lorarffi-gateway-") as tmp:
        path = pathlib.Path(tmp) / "gateway.cf32"
        truth = make_recording(path)
        truth_path = pathlib.Path(tmp) / "truth.json"
        truth_path.write_text(json.dumps(truth))
        det = [_run_child(path, truth_path, s, "", env) for s in (0, 3, 1)]
        parts.append(_table("Detection only (channels decimated to 250 kS/s, 2 samples per chip)", det))
        if model_dir:
            mod = [_run_child(path, truth_path, s, model_dir, env) for s in (0, 1)]
            parts.append(_table(f"With a model (`{model_dir}`: SF7, 125 kHz, 1 MS/s; channels at 1 MS/s, SF7 "
                                "packets decided by it, the other SFs `unsupported`)", mod))
    parts.append("Reproduce: `.venv/bin/python benchmarks/run.py --only gateway`.\n")
    return "\n".join(parts)


if __name__ == "__main__":
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        path, truth_path, speed = sys.argv[i + 1], sys.argv[i + 2], float(sys.argv[i + 3])
        model = sys.argv[i + 4] if len(sys.argv) > i + 4 else ""
        print(json.dumps(_child(path, truth_path, speed, model)))
    else:
        print(run())
