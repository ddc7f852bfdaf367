"""A gateway authenticating against registries: enrolled devices and rogues on 3 channels at SF7 and SF8.

Run: ``.venv/bin/python benchmarks/run.py --only gateway_registry`` (or this file directly: it prints the
section). ``LORARFFI_BENCH_CACHE=DIR`` keeps the trained extractors in ``DIR/gateway_registry/sf<N>/``.

One chip model, a look-alike fleet (``make_fleet(..., spread=3, cfo_model="calibrated")``, the open-set
benchmark's seed). Per spreading factor an extractor (the default recipe with the enrollment extractor's
objective, ``lorarffi.rffi.recipe.EXTRACTOR_OBJECTIVE``; the closed-set benchmark's training session: day 1
from power-on, place 1, SNR 15-30 dB) is trained on devices
1-20 at that SF, and a registry bound to it enrolls the devices that send at that SF, 100 day-1 packets each.
The recording: 60 s of a 1 MS/s capture centred on 868.3 MHz, the enrolled devices 21-30, 4 plain rogues and
2 rogues tuned to enrolled devices' CFO (each on its target's channel and SF) on 868.1 / 868.3 / 868.5 MHz at
SF7 or SF8 (one per device), day 2 at place 2 (multipath), in-band SNR 0-25 dB. The live pipeline decides
it with one registry stage per SF (``live --model M7 --registry R7 --model M8 --registry R8``), drift
tracking on; every decision is matched to the simulator's ground truth.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from model_cache import reuse_cached_model  # noqa: E402

SFS = (7, 8)
CHANNELS_HZ = (868.1e6, 868.3e6, 868.5e6)
CENTER_HZ = 868.3e6
FS_HZ = 1e6
BW_HZ = 125e3
DURATION_S = 60.0
MEAN_INTERVAL_S = 0.12  # between attempts on any channel
N_TRAIN_DEVICES = 20
N_ENROLLED = 10
N_ROGUES = 4
N_TUNED = 2
N_TRAIN_PACKETS = 100
N_ENROLL_PACKETS = 100
TRAIN_S = 240.0
FLEET_SEED = 16
SPREAD = 3.0


def _cfg(sf: int):
    from lorarffi.dsp.config import LoRaConfig

    return LoRaConfig(sf=sf, bw_hz=BW_HZ, fs_hz=FS_HZ)


def _preambles(devices, sf: int, n: int, seed: int):
    from lorarffi.sim import Session, simulate_preamble_set

    return simulate_preamble_set(
        devices, _cfg(sf), n, session=Session(day=1, minutes_since_power_on=0.0, place=1),
        rng=np.random.default_rng(seed), snr_db=(15.0, 30.0), packet_interval_s=20 * 60.0 / n,
    )


def _extractor(train_fleet, sf: int, out: pathlib.Path) -> tuple[pathlib.Path, str]:
    """The SF's extractor (trained unless ``out`` holds one) and how it was trained."""
    from lorarffi.rffi.recipe import EXTRACTOR_OBJECTIVE
    from lorarffi.rffi.train import TrainConfig, train

    tc = TrainConfig(objective=EXTRACTOR_OBJECTIVE, max_time_s=TRAIN_S)
    if not reuse_cached_model(tc, _cfg(sf), out):
        ps = _preambles(train_fleet, sf, N_TRAIN_PACKETS, 1)
        t0 = time.perf_counter()
        result = train(ps.preambles, ps.device_ids, _cfg(sf), out, tc)
        (out / "trained.txt").write_text(
            f"trained {time.perf_counter() - t0:.0f} s, {len(result.history)} epochs ({result.stopped})"
        )
    return out, (out / "trained.txt").read_text() if (out / "trained.txt").exists() else "cached"


def _score(records, events, sfd_end_by_sf: dict[int, int], n_samples: int, enrolled_ids, tuned_ids) -> dict:
    """Match decisions to transmitted packets (same channel and SF, start within a symbol)."""
    whole = [e for e in events if e.start + sfd_end_by_sf[e.sf] <= n_samples]
    used = set()
    out = {"n_sent": len(whole), "n_decisions": len(records), "n_one_decision": 0, "n_missed": 0,
           "n_wrong_place": 0, "per_sf": {}}
    for sf in SFS:
        out["per_sf"][sf] = {"enrolled": 0, "enrolled_right": 0, "plain": 0, "plain_caught": 0,
                             "tuned": 0, "tuned_caught": 0, "verdicts": {}}
    starts = np.array([r.start for r in records], dtype=np.int64)
    for e in whole:
        sym = int(round(2**e.sf * FS_HZ / BW_HZ))
        near = np.flatnonzero(np.abs(starts - e.start) < sym) if starts.size else np.zeros(0, int)
        near = [i for i in near.tolist() if (records[i].channel_hz, records[i].sf) == (e.channel_hz, e.sf)]
        if not near:
            out["n_missed"] += 1
            continue
        out["n_one_decision"] += len(near) == 1
        used.update(near)
        r = records[near[0]]
        s = out["per_sf"][e.sf]
        s["verdicts"][r.verdict] = s["verdicts"].get(r.verdict, 0) + 1
        if e.device_id in enrolled_ids:
            s["enrolled"] += 1
            s["enrolled_right"] += r.verdict == "accept" and r.device == e.device_id
        elif e.device_id in tuned_ids:
            s["tuned"] += 1
            s["tuned_caught"] += r.verdict == "rogue"
        else:
            s["plain"] += 1
            s["plain_caught"] += r.verdict == "rogue"
    out["n_wrong_place"] = len(records) - len(used)
    return out


def run() -> str:
    import tempfile

    import torch

    from lorarffi.capture.file_source import FileSource
    from lorarffi.live.gateway import GatewayPlan
    from lorarffi.live.pipeline import LivePipeline
    from lorarffi.live.stages import RegistryStage
    from lorarffi.rffi.embedding import load_embedder
    from lorarffi.rffi.enroll import enroll
    from lorarffi.rffi.registry import Registry
    from lorarffi.sim import Session, StreamSimulator, make_fleet

    torch.set_num_threads(2)
    cache = os.environ.get("LORARFFI_BENCH_CACHE")
    fleet = make_fleet(N_TRAIN_DEVICES + N_ENROLLED, seed=FLEET_SEED, spread=SPREAD, cfo_model="calibrated")
    train_fleet, enrolled = fleet[:N_TRAIN_DEVICES], fleet[N_TRAIN_DEVICES:]
    enrolled_ids = {d.device_id for d in enrolled}
    t0 = time.perf_counter()
    sim = StreamSimulator(
        enrolled, _cfg(SFS[0]), session=Session(day=2, minutes_since_power_on=0.0, place=2),
        rogues=N_ROGUES, tuned_rogues=[d.device_id for d in enrolled[:N_TUNED]], channels_hz=CHANNELS_HZ,
        sfs=SFS, center_freq_hz=CENTER_HZ, snr_db=(0.0, 25.0), mean_interval_s=MEAN_INTERVAL_S, seed=5,
        spread=SPREAD,
    )
    tuned_ids = {r.device_id for r in sim.rogues[N_ROGUES:]}
    with tempfile.TemporaryDirectory(prefix="lorarffi-gwreg-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        path = tmp / "gateway.cf32"
        n = int(DURATION_S * FS_HZ)
        with open(path, "wb") as f:
            for _ in range(0, n, 1 << 22):
                _, iq = sim.read(min(1 << 22, n - sim.position))
                iq.tofile(f)
        events = sim.events
        sim_s = time.perf_counter() - t0
        stages, trained = {}, {}
        try:
            for sf in SFS:
                root = pathlib.Path(cache) / "gateway_registry" if cache else tmp / "models"
                model, trained[sf] = _extractor(train_fleet, sf, root / f"sf{sf}")
                emb = load_embedder(model)
                devices = [d for d in enrolled if sim.assignments[d.device_id][1] == sf]
                ps = _preambles(devices, sf, N_ENROLL_PACKETS, 11)
                pre = emb.preprocess(ps.preambles)
                reg = Registry.create(tmp / f"sf{sf}.db", model_fingerprint=emb.fingerprint,
                                      embedding_dim=emb.dim)
                enroll(emb, reg, pre.iq, ps.device_ids, cfo_hz=pre.cfo_hz)
                stages[(sf, BW_HZ)] = RegistryStage(emb, reg, source="gateway")
            from lorarffi.live.sinks import Sink

            class Collect(Sink):
                def __init__(self) -> None:
                    self.records: list = []

                def on_decisions(self, records, packets) -> None:
                    self.records += records

            sink = Collect()
            source = FileSource(path, format="cf32", fs_hz=FS_HZ, center_freq_hz=CENTER_HZ)
            pipe = LivePipeline(source, _cfg(SFS[0]), deciders=stages, sinks=[sink],
                                gateway=GatewayPlan(CENTER_HZ, CHANNELS_HZ, SFS, 1))
            t1 = time.perf_counter()
            summary = pipe.run()
            run_s = time.perf_counter() - t1
            audited = {}
            for (sf, _), st in stages.items():
                audited[sf] = len(st.registry.audit())
        finally:
            for st in stages.values():
                st.registry.close()
    sfd_end = {sf: int(round(2**sf * FS_HZ / BW_HZ * (8 + 4.25))) for sf in SFS}
    sc = _score(sink.records, events, sfd_end, summary.n_samples, enrolled_ids, tuned_ids)
    return _report(sc, summary, audited, trained, sim, enrolled, sim_s, run_s)


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:.1f} % ({a} of {b})" if b else "-"


def _report(sc, summary, audited, trained, sim, enrolled, sim_s, run_s) -> str:
    by_sf = {
        sf: sorted(d.device_id for d in enrolled if sim.assignments[d.device_id][1] == sf) for sf in SFS
    }
    rogue_sf = {r.device_id: sim.assignments[r.device_id][1] for r in sim.rogues}
    lines = [
        f"Simulation {sim_s:.0f} s; the pipeline decided the {DURATION_S:g} s recording in {run_s:.1f} s "
        f"(unpaced, {DURATION_S / run_s:.1f}x real time). Load average {os.getloadavg()[0]:.1f}.\n",
        "Enrolled devices by SF: " + "; ".join(f"SF{sf}: {ids}" for sf, ids in by_sf.items())
        + f". Rogues (id: SF): {rogue_sf} (the last {N_TUNED} tuned to devices "
        f"{[d.device_id for d in enrolled[:N_TUNED]]}).\n",
        "Extractors: " + "; ".join(f"SF{sf}: {t}" for sf, t in trained.items()) + ".\n",
        "| measure | value |",
        "|---|---|",
        f"| packets sent (preamble and SFD in the recording) | {sc['n_sent']} |",
        f"| decided exactly once, on the right channel and SF | {_pct(sc['n_one_decision'], sc['n_sent'])} |",
        f"| missed | {sc['n_missed']} |",
        f"| decisions matching no packet on their channel and SF | {sc['n_wrong_place']} |",
        f"| verdicts (summary) | {dict(summary.verdicts)} |",
        f"| audit rows per registry | {', '.join(f'SF{sf}: {n}' for sf, n in audited.items())} |",
        "",
        "| SF | enrolled devices authenticated (own id) | plain rogues caught | CFO-tuned rogues caught "
        "| verdicts |",
        "|---|---|---|---|---|",
    ]
    for sf, s in sc["per_sf"].items():
        lines.append(f"| {sf} | {_pct(s['enrolled_right'], s['enrolled'])} | "
                     f"{_pct(s['plain_caught'], s['plain'])} | {_pct(s['tuned_caught'], s['tuned'])} | "
                     f"{s['verdicts']} |")
    lines.append(
        "\nSingle-packet decisions, under shift (day 2, another place, multipath, SNR 0-25 dB: lower than "
        "the open-set benchmark's 10-25 dB). Reproduce: `.venv/bin/python benchmarks/run.py --only "
        "gateway_registry`.\n"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
