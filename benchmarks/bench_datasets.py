"""Dataset I/O: selective reads of a large public file vs the authors' whole-file loader, random batches for
training, preamble-file writing, and chunked recording reads vs loading the file whole.

Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/run.py --only datasets``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_DEVICES, N_PER_DEVICE, HALF = 40, 120, 8192  # 4800 rows of 64 KiB: 315 MB, like one public test file

_CHILD = r"""
import json, sys, time, psutil, numpy as np, h5py
path, mode = sys.argv[1], sys.argv[2]
from lorarffi.datasets.public import load_public
proc = psutil.Process()
before = proc.memory_info().rss
t0 = time.perf_counter()
if mode == "ours":
    iq, ids = load_public(path, devices=[7, 23], packets=slice(0, 50))
else:  # the authors' LoadDataset.load_iq_samples: read everything, then select
    with h5py.File(path, "r") as f:
        label = np.transpose(f["label"][:]).astype(int) - 1
        data = f["data"][:]
    rows = np.concatenate([np.where(label[:, 0] == d)[0][0:50] for d in (6, 22)])
    iq = data[rows, :8192] + 1j * data[rows, 8192:]
dt = time.perf_counter() - t0
print(json.dumps({"s": dt, "rss_mb": (proc.memory_info().rss - before) / 1e6, "n": int(iq.shape[0])}))
"""


def _build_public(path: Path) -> None:
    import h5py

    rng = np.random.default_rng(0)
    block = rng.standard_normal((N_PER_DEVICE, 2 * HALF)).astype(np.float32)
    with h5py.File(path, "w") as f:
        data = f.create_dataset("data", shape=(N_DEVICES * N_PER_DEVICE, 2 * HALF), dtype=np.float32,
                                chunks=(8, 2 * HALF))
        for d in range(N_DEVICES):
            block[:, 0] = d
            data[d * N_PER_DEVICE:(d + 1) * N_PER_DEVICE] = block
        f["label"] = np.repeat(np.arange(1, N_DEVICES + 1), N_PER_DEVICE)[None, :].astype(float)


def _child(path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), mode], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def run() -> str:
    from lorarffi.datasets.native import PreambleWriter, convert, open_preamble_file
    from lorarffi.datasets.recording import open_recording
    from lorarffi.dsp.chirp import packet_waveform
    from lorarffi.dsp.config import LoRaConfig

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        pub = d / "public.h5"
        _build_public(pub)
        size_mb = pub.stat().st_size / 1e6
        ours = [_child(pub, "ours") for _ in range(3)]
        ref = [_child(pub, "reference") for _ in range(3)]
        med = {k: statistics.median(r[k] for r in ours) for k in ("s", "rss_mb")}
        rmed = {k: statistics.median(r[k] for r in ref) for k in ("s", "rss_mb")}
        lines += [
            f"### Selective read: 2 devices x 50 packets of a {size_mb:.0f} MB public-layout file",
            "",
            "Each run in a fresh process (median of 3); RSS growth measured with psutil around the call.",
            "",
            "| loader | time (s) | RSS growth (MB) |",
            "|---|---|---|",
            f"| `load_public` (sorted selective reads) | {med['s']:.3f} | {med['rss_mb']:.1f} |",
            f"| authors' `load_iq_samples` (whole file, then select) | {rmed['s']:.3f} | "
            f"{rmed['rss_mb']:.1f} |",
            "",
            f"Target (issue 3): RSS growth < 100 MB: **{'met' if med['rss_mb'] < 100 else 'NOT met'}** "
            f"({med['rss_mb']:.1f} MB).",
            "",
        ]

        # random training batches: public (uncompressed) vs native (gzip 1 + shuffle)
        nat = d / "native.h5"
        convert(pub, nat, "native")
        rng = np.random.default_rng(1)
        rows_batches = [np.sort(rng.choice(N_DEVICES * N_PER_DEVICE, 64, replace=False)) for _ in range(20)]
        lines += ["### Random batches of 64 packets (what a training `Dataset` reads)", "",
                  "| file | size (MB) | median ms / batch | packets / s |", "|---|---|---|---|"]
        for name, path in (("public layout, uncompressed", pub), ("native, gzip 1 + shuffle", nat)):
            with open_preamble_file(path) as pf:
                pf.read_rows(rows_batches[0])
                it = iter(rows_batches * 2)
                ms = _median_ms(lambda pf=pf, it=it: pf.read_rows(next(it)), 20)
            lines.append(f"| {name} | {path.stat().st_size / 1e6:.0f} | {ms:.1f} | {64 / ms * 1e3:.0f} |")
        lines.append("")
        lines.append("The random-noise rows of this file barely compress; ADC-quantised captures do better.")
        lines.append("")

        # writing simulated preambles
        cfg = LoRaConfig()
        clean = packet_waveform(cfg, cfo_hz=1234.0)[: cfg.preamble_samples]
        noise = 0.05 * (rng.standard_normal((256, clean.size)) + 1j * rng.standard_normal((256, clean.size)))
        batch = (clean[None, :] + noise).astype(np.complex64)
        lines += ["### Writing preambles (`PreambleWriter`, 8 batches of 256 packets of 8192 samples)", "",
                  "| compression | MB/s | file / raw size |", "|---|---|---|"]
        for level in (None, 1, 4):
            out = d / f"w{level}.h5"
            t0 = time.perf_counter()
            with PreambleWriter(out, cfg, source="bench", compression_level=level) as w:
                for _ in range(8):
                    w.append(batch, np.arange(256) % 10)
            dt = time.perf_counter() - t0
            raw_mb = 8 * batch.nbytes / 1e6
            lines.append(f"| {'none' if level is None else f'gzip {level}'} | {raw_mb / dt:.0f} | "
                         f"{out.stat().st_size / 1e6 / raw_mb:.2f} |")
        lines.append("")

        # chunked recording reads vs loading the file whole
        raw = d / "capture.cu8"
        rng.integers(0, 256, 200_000_000, dtype=np.uint8).tofile(raw)  # 100 M samples, 200 MB
        t0 = time.perf_counter()
        with open_recording(raw, format="cu8", fs_hz=2.4e6) as rec:
            n = sum(chunk.size for _, chunk in rec.iter_chunks(1 << 20))
        t_chunks = time.perf_counter() - t0
        t0 = time.perf_counter()
        u = np.fromfile(raw, dtype=np.uint8).astype(np.float32)
        whole = ((u[0::2] - 127.5) + 1j * (u[1::2] - 127.5)).astype(np.complex64) / np.float32(127.5)
        t_whole = time.perf_counter() - t0
        del u, whole
        lines += ["### Reading a 200 MB cu8 recording (100 M samples) to complex64", "",
                  "| reader | MS/s | memory |", "|---|---|---|",
                  f"| `Recording.iter_chunks(2**20)` | {n / t_chunks / 1e6:.0f} | one 8 MB chunk |",
                  f"| `np.fromfile` + arithmetic, whole file | {1e8 / t_whole / 1e6:.0f} | "
                  "whole file (> 1 GB) |",
                  ""]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(run())
