"""Simulator speed: 1 s of 1 MS/s stream in well under 1 s of CPU; preamble sets; augmented training batches.

The ``sim`` virtual radio is paced in real time, so it must be much faster than real time; preamble sets and
the augmented training batches should keep up with training.

Run: ``.venv/bin/python benchmarks/run.py --only simulate`` (or this file directly: it prints the section).
One thread (``OMP_NUM_THREADS=1`` before numpy is imported): the live source runs beside the detector.
CPU time is ``time.process_time`` (immune to other processes' load), reported as medians.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before numpy is imported (a no-op if an earlier benchmark imported it)

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from lorarffi.dsp import LoRaConfig  # noqa: E402
from lorarffi.sim import Session, StreamSimulator, make_fleet, simulate_preamble_set  # noqa: E402

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
STREAM_SECONDS = 5
CHUNK = 1 << 16
TARGET_STREAM_CPU_PER_S = 0.5  # "well under 1 s"
N_SET_PACKETS = 400
TARGET_SET_PPS = 100.0
N_LOADER_PACKETS = 512
BATCH = 32


def _stream_cpu_per_s(multipath: bool, rogues: int) -> list[float]:
    sim = StreamSimulator(make_fleet(10, seed=0), CFG, seed=1, rogues=rogues, multipath=multipath,
                          session=Session(minutes_since_power_on=5.0))
    per_s = []
    for _ in range(STREAM_SECONDS):
        t0 = time.process_time()
        made = 0
        while made < CFG.fs_hz:
            _, iq = sim.read(min(CHUNK, int(CFG.fs_hz) - made))
            made += iq.size
        per_s.append(time.process_time() - t0)
    return per_s


def _set_pps(multipath: bool) -> float:
    fleet = make_fleet(10, seed=0)
    t0 = time.process_time()
    simulate_preamble_set(fleet, CFG, N_SET_PACKETS // 10, session=Session(), rng=np.random.default_rng(0),
                          multipath=multipath)
    return N_SET_PACKETS / (time.process_time() - t0)


def _augment_pps() -> tuple[float, float]:
    """Training batches (features of batch 32) without and with every augmentation, packets/s CPU."""
    from lorarffi.rffi.augment import AUGMENTATIONS, Augmenter
    from lorarffi.rffi.features import compute_features
    from lorarffi.rffi.preprocess import preprocess_preambles
    from lorarffi.rffi.train import DEFAULT_REPRESENTATION, augmented_features

    ps = simulate_preamble_set(make_fleet(8, seed=0), CFG, N_LOADER_PACKETS // 8, session=Session(),
                               rng=np.random.default_rng(0), multipath=False)
    pre = preprocess_preambles(ps.preambles, CFG).iq
    aug = Augmenter(AUGMENTATIONS, CFG.fs_hz, bw_hz=CFG.bw_hz)
    batches = [pre[s:s + BATCH] for s in range(0, pre.shape[0], BATCH)]
    out = []
    for fn in (lambda b, rng: compute_features(b, DEFAULT_REPRESENTATION),
               lambda b, rng: augmented_features(b, aug, rng, DEFAULT_REPRESENTATION)):
        fn(batches[0], np.random.default_rng(1))  # warm-up
        t0 = time.process_time()
        for i, b in enumerate(batches):
            fn(b, np.random.default_rng(i))
        out.append(pre.shape[0] / (time.process_time() - t0))
    return out[0], out[1]


def run() -> str:
    rows = []
    for multipath, rogues in ((False, 0), (True, 2)):
        per_s = _stream_cpu_per_s(multipath, rogues)
        med = statistics.median(per_s)
        ok = "met" if med < TARGET_STREAM_CPU_PER_S else "NOT met"
        rows.append(f"| stream, 10 devices, {rogues} rogues, multipath {multipath} | {med:.3f} s CPU per 1 s "
                    f"of stream (max {max(per_s):.3f}) | < {TARGET_STREAM_CPU_PER_S} s: {ok} |")
    for multipath in (False, True):
        pps = _set_pps(multipath)
        ok = "met" if pps > TARGET_SET_PPS else "NOT met"
        rows.append(f"| preamble set ({N_SET_PACKETS} x 8192 samples), multipath {multipath} | {pps:.0f} "
                    f"packets/s CPU | > {TARGET_SET_PPS:.0f}: {ok} |")
    plain, augmented = _augment_pps()
    for what, pps in (("no augmentation", plain), ("awgn + multipath + cfo", augmented)):
        rows.append(f"| training batch features, {what}, batch {BATCH} | {pps:.0f} packets/s CPU | - |")
    return "\n".join([
        "Simulator and training-data pipeline speed, one thread, SF7/125 kHz at 1 MS/s "
        "(`python benchmarks/run.py --only simulate`).",
        "",
        "| what | measured (median) | target |",
        "|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    print(run())
