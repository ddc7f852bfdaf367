"""Scale-out throughput and latency: packets through a Redis stream to workers deciding against a PostgreSQL
registry.

A real ``redis-server`` and PostgreSQL 15 are started on 127.0.0.1 (the test suite's ``tests/servers.py``);
a small extractor is trained on a simulated fleet and devices are enrolled into the PostgreSQL registry.
Aligned packets of a simulated capture (the detector's own) are replicated to N_PACKETS with distinct start
samples and appended to the stream by the capture node's sink (:class:`~lorarffi.live.queue_sink.QueueSink`).

Measured:

- the queue's own cost per packet: node side (encode + ``XADD`` in transactions of 64) and worker side
  (``XREADGROUP`` + decode + record + ``XACK``/``XDEL``) with a decision stage that does no work
  (:class:`~lorarffi.live.stages.DetectionOnly`, no database); target <= 1 ms per packet;
- the decision's own cost per packet in one process (the registry stage: network, K-NN, audit insert);
- packets/s through ``lora-rffi worker`` processes (1 and 2, one torch thread each) on a pre-filled stream,
  from the first to the last stored decision (the audit log's times; worker start-up excluded);
- end-to-end latency at a paced offered load (one worker): from the node's detection to the stored decision.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
N_PACKETS = int(os.environ.get("LORARFFI_BENCH_QUEUE_N", "1500"))
PACED_RATE_HZ = 40.0  # offered packets/s of the latency run (several gateways' worth of LoRa traffic)
PACED_S = 10.0


def _load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _servers():
    sys.path.insert(0, str(HERE.parent / "tests"))
    import servers

    return servers


def _world(d: pathlib.Path, pg_url: str):
    """Model directory, the registry URL (devices 1-4 enrolled) and the aligned packets."""
    import torch

    from lorarffi.dsp.config import LoRaConfig
    from lorarffi.dsp.detect import StreamDetector
    from lorarffi.rffi.embedding import load_embedder
    from lorarffi.rffi.enroll import enroll
    from lorarffi.rffi.registry import Registry
    from lorarffi.rffi.train import TrainConfig, train
    from lorarffi.sim import Session, StreamSimulator, make_fleet, simulate_preamble_set

    torch.set_num_threads(1)
    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    fleet = make_fleet(6, seed=0, spread=3.0)
    ps = simulate_preamble_set(
        fleet, cfg, 30, session=Session(), rng=np.random.default_rng(3), snr_db=(15.0, 30.0), multipath=False
    )
    config = TrainConfig(model="rffi_net", objective="triplet", epochs=2, batch_size=16, lr=3e-3, seed=2)
    train(ps.preambles, ps.device_ids, cfg, d / "model", config)
    emb = load_embedder(d / "model")
    enrolled = np.isin(ps.device_ids, (1, 2, 3, 4))
    pre = emb.preprocess(ps.preambles[enrolled])
    with Registry.create(pg_url, model_fingerprint=emb.fingerprint, embedding_dim=emb.dim) as reg:
        enroll(emb, reg, pre.iq, ps.device_ids[enrolled], cfo_hz=pre.cfo_hz)
    sim = StreamSimulator(fleet[:5], cfg, seed=4, snr_db=(20.0, 30.0), mean_interval_s=0.1, multipath=False)
    _, iq = sim.read(3_000_000)
    det = StreamDetector(cfg)
    found = det.process(iq) + det.flush()
    span = 2_000_000
    packets = [
        dataclasses.replace(p, start=p.start + k * span * 10, stop=p.stop + k * span * 10,
                            fingerprint_start=p.fingerprint_start + k * span * 10)
        for k in range(N_PACKETS // len(found) + 1)
        for p in found
    ][:N_PACKETS]  # fmt: skip
    return cfg, d / "model", packets


def _fill(url: str, cfg, packets, node: str = "bench") -> float:
    """Append every packet through the node sink; returns seconds per packet (encode + XADD)."""
    from lorarffi.live.queue_sink import QueueSink
    from lorarffi.live.stages import DetectionOnly

    sink = QueueSink(url, node_id=node, cfg=cfg, maxlen=10 * len(packets), buffer_size=len(packets) + 1)
    records = DetectionOnly().decide(packets)
    t0 = time.perf_counter()
    sink.on_decisions(records, packets)
    assert sink.drain(300.0)
    dt = time.perf_counter() - t0
    sink.close(None)
    assert sink.n_sent == len(packets) and sink.n_capped == 0
    return dt / len(packets)


def _worker_side_overhead(url: str) -> tuple[float, int]:
    """Seconds per packet of the worker's queue work alone (no model, no database), and the packets."""
    from lorarffi.live.stages import DetectionOnly
    from lorarffi.live.worker import QueueWorker

    worker = QueueWorker(url, DetectionOnly(), consumer="overhead", batch_size=32, poll_s=0.05)
    summary = worker.run(idle_exit_s=0.3)
    return (summary.wall_s - 0.3) / max(summary.n_entries, 1), summary.n_entries


def _decide_cost(model_dir, registry_url: str, packets) -> float:
    """Seconds per packet of the registry stage in batches of 32 (audit rows included)."""
    from lorarffi.live.stages import RegistryStage

    stage = RegistryStage.from_paths(model_dir, registry_url, source="bench-decide")
    try:
        stage.decide(packets[:32])  # warm-up
        batch = packets[32:352]
        t0 = time.perf_counter()
        for i in range(0, len(batch), 32):
            stage.decide(batch[i : i + 32])
        return (time.perf_counter() - t0) / len(batch)
    finally:
        stage.close()


def _start_workers(
    n: int, url: str, model_dir, registry_url: str, env: dict, *extra: str
) -> list[subprocess.Popen]:
    """``n`` worker processes, returned once each has joined the stream's consumer group."""
    import redis

    files = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(n)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lorarffi.cli",
                "-q",
                "worker",
                "--queue",
                url,
                "--model",
                str(model_dir),
                "--registry",
                registry_url,
                "--consumer",
                f"w{i}",
                "--json",
                *extra,
            ],
            stdout=files[i][0],  # a decision line per packet: more than a pipe holds
            stderr=files[i][1],
            text=True,
            env=env,
        )  # fmt: skip
        for i in range(n)
    ]
    for proc, (out, err) in zip(procs, files, strict=True):
        proc.out_file, proc.err_file = out, err
    base, stream = url.rsplit("/", 1)
    client = redis.Redis.from_url(base)
    deadline = time.monotonic() + 300
    while True:
        try:
            if len(client.xinfo_consumers(stream, "lorarffi-workers")) >= n:
                break
        except redis.ResponseError:  # no stream or group yet
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("the workers did not start")
        time.sleep(0.1)
    return procs


def _decided(registry_url: str, prefix: str) -> list:
    """Audit rows whose source starts with ``prefix``."""
    from lorarffi.rffi.registry import Registry

    with Registry.open(registry_url) as reg:
        return [r for r in reg.audit() if r.source.startswith(prefix)]


def _n_decided(registry_url: str, prefix: str) -> int:
    """How many audit rows have a source starting with ``prefix`` (one COUNT query: polled often)."""
    from sqlalchemy import func, select

    from lorarffi.rffi.registry import Registry
    from lorarffi.rffi.registry.schema import audit

    with Registry.open(registry_url) as reg, reg.engine.connect() as conn:
        query = select(func.count()).select_from(audit).where(audit.c.source.startswith(prefix))
        return int(conn.execute(query).scalar_one())


def _warm_up(url: str, cfg, packets, registry_url: str, n_workers: int) -> None:
    """Send a few batches per worker and wait until they are decided: the first calls of a fresh process
    (allocations, first network run) are not part of what is measured."""
    from lorarffi.live.queue_sink import QueueSink
    from lorarffi.live.stages import DetectionOnly

    warm = packets[: 64 * n_workers]
    sink = QueueSink(url, node_id="warm", cfg=cfg)
    sink.on_decisions(DetectionOnly().decide(warm), warm)
    sink.drain(60.0)
    sink.close(None)
    _wait_decided(registry_url, f"warm/{sink.run_id}", len(warm))


def _wait_decided(registry_url: str, prefix: str, n: int) -> list:
    deadline = time.monotonic() + 600
    while (got := _n_decided(registry_url, prefix)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{got} of {n} packets decided ({prefix})")
        time.sleep(0.5)
    return _decided(registry_url, prefix)


def _finish_workers(procs: list[subprocess.Popen]) -> list[dict]:
    """Stop the workers (SIGTERM: they finish their batch) and read their summaries."""
    out = []
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=600)
        p.out_file.seek(0)
        p.err_file.seek(0)
        if p.returncode != 0:
            raise RuntimeError(f"worker failed: {p.err_file.read()[-2000:]}")
        out.append(json.loads(p.out_file.read().splitlines()[-1])["summary"])
    return out


def _throughput(registry_url: str, source_prefix: str) -> tuple[int, float]:
    """Decisions logged under ``source_prefix`` and their span from first to last, seconds."""
    times = sorted(r.time_utc for r in _decided(registry_url, source_prefix))
    return len(times), (times[-1] - times[0]).total_seconds()


def _paced(url: str, cfg, packets, model_dir, registry_url: str, env: dict) -> dict:
    """One worker (warmed up), the node offering PACED_RATE_HZ packets/s; percentiles of the latency from
    each packet's hand-over to the node sink to its decision's time in the audit log, ms."""
    from lorarffi.live.queue_sink import QueueSink
    from lorarffi.live.stages import DetectionOnly

    procs = _start_workers(1, url, model_dir, registry_url, env)
    _warm_up(url, cfg, packets, registry_url, 1)
    sink = QueueSink(url, node_id="paced", cfg=cfg)
    n = int(PACED_RATE_HZ * PACED_S)
    detected: dict[int, float] = {}
    t0 = time.monotonic()
    for i, p in enumerate(packets[:n]):
        wait = t0 + i / PACED_RATE_HZ - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        detected[int(p.start)] = time.time()
        sink.on_decisions(DetectionOnly().decide([p]), [p])
    sink.drain(30.0)
    sink.close(None)
    rows = _wait_decided(registry_url, f"paced/{sink.run_id}", n)
    _finish_workers(procs)
    latency_ms = np.array([1e3 * (r.time_utc.timestamp() - detected[r.start_sample]) for r in rows])
    return {name: float(np.percentile(latency_ms, q)) for name, q in (("p50", 50), ("p99", 99), ("max", 100))}


def run() -> str:
    servers = _servers()
    root = pathlib.Path(tempfile.mkdtemp(prefix="bench-queue-"))
    redis = servers.RedisServer(root / "redis")
    (root / "redis").mkdir()
    pg = servers.PostgresServer(pathlib.Path(tempfile.mkdtemp(prefix="bench-pg-")))
    redis.start()
    import redis as redis_py

    redis_py.Redis.from_url(redis.url).config_set("appendfsync", "everysec")  # Redis's own default
    load_before = _load_average()
    env = {**os.environ, "PGPASSWORD": servers.PG_PASSWORD, "OMP_NUM_THREADS": "1"}
    os.environ["PGPASSWORD"] = servers.PG_PASSWORD  # this process reads the registry too
    try:
        registry_url = pg.url(password=False)  # the password from PGPASSWORD, never on a command line
        cfg, model_dir, packets = _world(root, registry_url)
        n = len(packets)
        many = [  # the queue's cost alone: enough packets that start-up and the idle exit do not count
            dataclasses.replace(p, start=p.start + k * 10**12) for k in range(3) for p in packets
        ]
        node_s = _fill(f"{redis.url}/overhead", cfg, many)
        worker_s, n_overhead = _worker_side_overhead(f"{redis.url}/overhead")
        decide_s = _decide_cost(model_dir, registry_url, packets)
        rates = {}
        for k in (1, 2):
            url = f"{redis.url}/w{k}"
            procs = _start_workers(k, url, model_dir, registry_url, env, "--batch", "32")
            _warm_up(url, cfg, packets, registry_url, k)
            _fill(url, cfg, packets, node=f"n{k}")
            _wait_decided(registry_url, f"n{k}/", n)
            summaries = _finish_workers(procs)
            count, span_s = _throughput(registry_url, f"n{k}/")
            assert count == n and sum(s["n_decisions"] for s in summaries) == n + 64 * k
            rates[k] = (count / span_s, [s["n_decisions"] for s in summaries])
        paced = _paced(f"{redis.url}/paced", cfg, packets, model_dir, registry_url, env)
        load_after = _load_average()
    finally:
        redis.stop()
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pg.directory, ignore_errors=True)
    overhead_ms = 1e3 * (node_s + worker_s)
    ceiling_1 = 1.0 / decide_s
    q = paced
    lines = [
        "Packets through the work queue: capture node sink -> Redis stream (consumer group) -> "
        "`lora-rffi worker` processes deciding against a PostgreSQL registry (small `rffi_net` extractor "
        "trained here, 4 devices enrolled, registry stage with drift tracking shared through the registry, "
        "as by default), each decision logged once "
        f"in the audit log before `XACK`. {n} aligned packets of a simulated SF7/125 kHz capture (64 KiB "
        "per preamble view, one view per message). Redis 7.0 (append-only, fsync every second) and "
        "PostgreSQL 15 started on 127.0.0.1 by the benchmark. One torch thread per worker.",
        "",
        f"**Shared machine**: 2 cores shared with other jobs; load average (1, 5, 15 min) {load_before} at "
        f"the start, {load_after} at the end. Figures are what this run measured under that load.",
        "",
        "| measure | target | measured | met |",
        "|---|---|---|---|",
        f"| queue overhead per packet (node encode+XADD, worker XREADGROUP+decode+XACK/XDEL) | <= 1 ms | "
        f"{overhead_ms:.3f} ms ({1e3 * node_s:.3f} + {1e3 * worker_s:.3f}; {n_overhead} packets) | "
        f"{'yes' if overhead_ms <= 1.0 else 'no'} |",
        f"| decision cost per packet in one process (registry stage, batches of 32) | - | "
        f"{1e3 * decide_s:.2f} ms (ceiling {ceiling_1:.0f} packets/s per core) | - |",
        f"| packets/s, 1 worker | - | {rates[1][0]:.0f} | - |",
        f"| packets/s, 2 workers (this 2-core machine) | - | {rates[2][0]:.0f} (decisions per worker, "
        f"warm-up included: {rates[2][1]}) | - |",
        f"| end-to-end latency at {PACED_RATE_HZ:.0f} packets/s offered, 1 worker: detection -> stored "
        f"decision | - | p50 {q['p50']:.1f} ms, p99 {q['p99']:.1f} ms, max {q['max']:.1f} ms | - |",
        "",
        f"Per packet the queue costs {overhead_ms:.2f} ms (node and worker sides together) and the decision "
        f"{1e3 * decide_s:.2f} ms in one process with this small extractor; a larger network (the TIFS "
        "extractor, the default CNN) costs more per packet and shifts the balance further to the decision. "
        "A worker is CPU-bound: one process with one torch thread does at most about 1 / (decision + its "
        f"share of the queue) = {1.0 / (decide_s + worker_s):.0f} packets/s on a free core. "
        " Two workers on this 2-core machine share its cores with each other, Redis, "
        "PostgreSQL, the capture node filling the stream and the machine's other jobs (load average above), "
        "so their sum cannot reach twice one worker's rate here. On N machines each worker brings its own "
        "cores: throughput grows about N times the one-worker figure until Redis (one core, tens of "
        "thousands of small XADD/XACK per second, here bounded by moving 64 KiB per packet) or the "
        "registry's audit inserts (one transaction per batch) saturate, far above the traffic of a city's "
        "LoRa receivers. The latency at a modest load is the batch wait (`--max-wait-s`, 20 ms) plus the "
        "decision of a small batch.",
        "",
        "Reproduce: `python benchmarks/run.py --only queue` (`LORARFFI_BENCH_QUEUE_N` packets, "
        "default 1500).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run())
