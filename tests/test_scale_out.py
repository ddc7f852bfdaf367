"""Scale-out with real components: capture nodes (``lora-rffi live --detect-only --queue``), workers
(``lora-rffi worker``), a real ``redis-server`` and a real PostgreSQL registry, each command its own process.

The world (a small extractor, a registry of devices 1-4, a 4 s recording with rogues) is
``test_live_registry``'s; the recording is cut in two, one half per capture node. The reference is
single-machine ``lora-rffi live --model --registry`` on each half (its own copy of the registry). Drift
tracking is on on both sides, as ``live`` and ``worker`` run by default: the workers share the movement of
the devices' CFO centres through the registry, and the decisions must still equal the single-machine ones.
Scores are compared to a few float32 ulps: the network sees other batches on a worker (distances of unit
vectors of 128 float32 values: a few ulps of 1 times the terms summed, as in ``test_live_registry``).
"""

# ruff: noqa: F811 - pytest fixtures imported from other modules are redefined as arguments

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from servers import PG_PASSWORD, postgres_server, redis_server  # noqa: F401 - module fixtures
from test_live_registry import CFG, world  # noqa: F401 - the model, registry and recording

from lorarffi.cli import main
from lorarffi.live.queue import QUEUE_SCHEMA_VERSION, decode_message, packet_key, preamble_message
from lorarffi.live.worker import LOST_VERDICT
from lorarffi.rffi.registry import Registry

pytestmark = pytest.mark.slow

WAIT_S = 60.0  # longest wait for the cluster to finish (it takes seconds; this only bounds a failure)
SCORE_ATOL = 128 * 4 * 2**-23
SOURCE = ["--format", "cf32", "--fs-hz", "1M"]
_streams = iter(range(10_000))


# -- the pieces ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def halves(world, tmp_path_factory) -> list:
    """The recording cut in two files, one per capture node."""
    d = tmp_path_factory.mktemp("halves")
    iq = world["iq"]
    out = []
    for i, part in enumerate((iq[: iq.size // 2], iq[iq.size // 2 :])):
        path = d / f"node{i}.cf32"
        part.tofile(path)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def reference(world, halves, tmp_path_factory) -> dict:
    """Single-machine ``live`` on each half: ``{node: [(start, device, verdict, score), ...]}``."""
    import shutil

    d = tmp_path_factory.mktemp("reference")
    out = {}
    for node, path in zip(("a", "b"), halves, strict=True):
        reg = d / f"{node}.db"
        shutil.copy(world["registry"], reg)
        lines = _run_inprocess(
            ["live", "--source", f"file:{path}", *SOURCE, "--model", str(world["model"]), "--registry",
             str(reg), "--json"]
        )  # fmt: skip
        out[node] = [(r["start"], r["device"], r["verdict"], r["score"]) for r in lines if "summary" not in r]
    assert len(out["a"]) >= 10 and len(out["b"]) >= 10
    return out


def _run_inprocess(argv: list[str]) -> list[dict]:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return [json.loads(x) for x in buf.getvalue().splitlines()]


@pytest.fixture()
def pg_registry(world, postgres_server, tmp_path, monkeypatch) -> str:
    """The world's registry in a fresh PostgreSQL database; its URL without the password (PGPASSWORD)."""
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
    url = postgres_server.create_database(f"cluster{next(_streams)}").replace(f":{PG_PASSWORD}@", "@")
    with Registry.open(world["registry"]) as reg:
        export = reg.export(tmp_path / "fleet.lrr")
    Registry.import_(export, url)
    return url


@pytest.fixture()
def queue(redis_server) -> str:
    return f"{redis_server.url}/lora{next(_streams)}"


def _env() -> dict:
    return {**os.environ, "PGPASSWORD": PG_PASSWORD, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


_running: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_left():
    """Whatever a test started is killed when it ends, passed or failed."""
    yield
    while _running:
        proc = _running.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT_S)


def start(args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorarffi.cli", "-q", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    _running.append(proc)
    return proc


def node(path, queue: str, name: str, *extra: str) -> subprocess.Popen:
    return start(["live", "--detect-only", "--source", f"file:{path}", *SOURCE, "--queue", queue,
                  "--node-id", name, "--json", *extra])  # fmt: skip


def worker(world, queue: str, registry: str, name: str, *extra: str) -> subprocess.Popen:
    return start(["worker", "--queue", queue, "--model", str(world["model"]), "--registry", registry,
                  "--consumer", name, "--json", *extra])  # fmt: skip


def finish(proc: subprocess.Popen, timeout_s: float = WAIT_S) -> tuple[dict, str]:
    """Wait for a command; its summary line and stderr."""
    out, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, err
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    return lines[-1]["summary"], err


def node_runs(procs: list[subprocess.Popen]) -> dict[str, str]:
    """Finish the capture nodes; ``{node: run}`` from their summaries (every packet queued)."""
    runs = {}
    for p in procs:
        summary, err = finish(p)
        q = summary["sinks"]["queue"]
        assert q["n_undelivered"] == 0 and q["n_capped"] == 0, (q, err)
        runs[q["node_id"]] = q["run"]
    return runs


def audit(url: str) -> list:
    with Registry.open(url) as reg:
        return reg.audit()


def wait_for(condition, timeout_s: float = WAIT_S, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def joined(redis_url: str, queue: str, n: int, workers: list[subprocess.Popen]) -> None:
    """Wait until ``n`` workers have joined the queue's consumer group (they are up: model loaded). If they do
    not, stop ``workers`` and fail with what each of them said."""
    import redis

    client = redis.Redis.from_url(redis_url)
    stream = queue.rsplit("/", 1)[1]

    def consumers() -> list:
        try:
            return client.xinfo_consumers(stream, "lorarffi-workers")
        except redis.ResponseError:  # no stream or group yet
            return []

    try:
        wait_for(lambda: len(consumers()) >= n, what=f"{n} worker(s) ready")
    except AssertionError as exc:
        said = []
        for w in workers:
            running = w.poll() is None
            if running:
                w.send_signal(signal.SIGTERM)
            try:
                _, err = w.communicate(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                w.kill()
                _, err = w.communicate()
            said.append(f"{'running' if running else 'exited'} (exit {w.returncode}): {err[-3000:]}")
        group = [c.get("name") for c in consumers()]
        raise AssertionError(f"{exc}; consumers {group}; workers: " + " || ".join(said)) from None


def decided(url: str) -> int:
    return sum(r.packet_key is not None for r in audit(url))


def stop(proc: subprocess.Popen) -> dict:
    proc.send_signal(signal.SIGTERM)
    return finish(proc)[0]


def check_decisions(rows: list, reference: dict, runs: dict[str, str]) -> None:
    """One audit row per packet, keyed NODE/RUN/START, equal to the single-machine decisions."""
    keys = [r.packet_key for r in rows]
    assert len(keys) == len(set(keys)), "a packet was logged twice"
    assert not [r for r in rows if r.verdict == LOST_VERDICT], "a loss record where none was expected"
    by_key = {r.packet_key: r for r in rows}
    expected = {
        packet_key(n, runs[n], start): (n, d, v, s) for n in reference for start, d, v, s in reference[n]
    }
    assert set(by_key) == set(expected)
    for key, (n, device, verdict, score) in expected.items():
        row = by_key[key]
        assert row.source == f"{n}/{runs[n]}"
        assert (row.device_id if row.device_id is not None else -1, row.verdict) == (device, verdict), key
        assert abs(row.score - score) <= SCORE_ATOL, key


# -- the message ---------------------------------------------------------------------------------------------
def test_a_message_carries_the_packet_exactly(world) -> None:
    from lorarffi.dsp.detect import StreamDetector

    det = StreamDetector(CFG)
    packets = det.process(np.asarray(world["iq"][:1_000_000])) + det.flush()
    p = packets[0]
    raw = preamble_message(p, node="n1", run="r", seq=3, time_unix_s=1.7e9 + 0.25, detected_unix_s=1.7e9 + 1,
                           node_latency_ms=12.5, channel_hz=868.1e6, sf=7, bw_hz=125e3,
                           with_cfo=True)  # fmt: skip
    fields = {k.encode(): v for k, v in raw.items()}  # as redis-py returns them
    msg = decode_message(fields)
    assert fields[b"v"] == str(QUEUE_SCHEMA_VERSION).encode()
    assert (msg.node, msg.run, msg.seq, msg.key) == ("n1", "r", 3, f"n1/r/{p.start}")
    assert (msg.time_unix_s, msg.channel_hz, msg.sf, msg.bw_hz) == (1.7e9 + 0.25, 868.1e6, 7, 125e3)
    q = msg.packet
    for name in ("start", "stop", "fingerprint_start", "cfo_hz", "snr_db", "power_db", "sync_word",
                 "start_frac", "cfo_coarse_hz", "fs_hz", "preamble_fs_hz", "n_preamble_symbols"):  # fmt: skip
        assert getattr(q, name) == getattr(p, name), name  # floats in repr form: exact
    assert q.preamble.dtype == np.complex64 and q.preamble.tobytes() == p.preamble.tobytes()
    assert q.preamble_with_cfo.tobytes() == p.preamble_with_cfo.tobytes()
    lean = preamble_message(p, node="n1", run="r", seq=4, time_unix_s=0.0, detected_unix_s=0.0,
                            node_latency_ms=0.0, channel_hz=None, sf=7, bw_hz=125e3)  # fmt: skip
    assert "preamble_with_cfo" not in lean and len(lean["preamble"]) == 8 * p.preamble.size
    assert decode_message({k.encode(): v for k, v in lean.items()}).packet.preamble_with_cfo is None
    assert len(fields[b"preamble"]) == 8 * p.preamble.size
    for broken in ({**fields, b"v": b"99"}, {k: v for k, v in fields.items() if k != b"cfo_hz"},
                   {**fields, b"preamble": b"\x00" * 7}):  # fmt: skip
        with pytest.raises(ValueError):
            decode_message(broken)


# -- the cluster ---------------------------------------------------------------------------------------------
def test_two_nodes_and_two_workers_decide_as_single_machine_live(
    world, halves, reference, pg_registry, queue, redis_server
) -> None:
    workers = [worker(world, queue, pg_registry, f"w{i}", "--batch", "8") for i in range(2)]
    runs = node_runs([node(halves[0], queue, "a"), node(halves[1], queue, "b")])
    n = len(reference["a"]) + len(reference["b"])
    wait_for(lambda: decided(pg_registry) >= n, what="every packet decided")
    joined(redis_server.url, queue, 2, workers)  # one may still be loading its model, the other did all
    summaries = [stop(w) for w in workers]
    check_decisions(audit(pg_registry), reference, runs)
    assert sum(s["n_entries"] for s in summaries) == n and sum(s["n_lost"] for s in summaries) == 0
    with Registry.open(world["registry"]) as enrolled, Registry.open(pg_registry) as shared:
        before, after = enrolled.cfo_centres(), shared.cfo_centres()
    assert set(after) == set(before) and after != before  # the workers tracked drift and stored it


def test_a_worker_killed_mid_batch_leaves_its_entries_to_the_other(
    world, halves, reference, pg_registry, queue, redis_server
) -> None:
    import psycopg
    import redis

    runs = node_runs([node(halves[0], queue, "a"), node(halves[1], queue, "b")])  # the queue fills first
    n = len(reference["a"]) + len(reference["b"])
    client = redis.Redis.from_url(redis_server.url)
    stream = queue.rsplit("/", 1)[1]
    with psycopg.connect(pg_registry) as lock:  # holds the audit log: the worker's batch cannot be stored
        lock.execute("LOCK TABLE audit IN EXCLUSIVE MODE")
        first = worker(world, queue, pg_registry, "doomed", "--batch", "4", "--claim-idle-s", "1")
        wait_for(lambda: client.xpending(stream, "lorarffi-workers")["pending"] >= 1, what="a batch in hand")
        time.sleep(0.5)  # deciding it, then waiting for the lock
        first.kill()  # SIGKILL mid-batch: no chance to store or acknowledge what it holds
        first.communicate(timeout=WAIT_S)
        lock.rollback()
    held = client.xpending(stream, "lorarffi-workers")["pending"]
    assert held >= 1 and decided(pg_registry) == 0
    second = worker(world, queue, pg_registry, "heir", "--batch", "4", "--claim-idle-s", "1")
    wait_for(lambda: decided(pg_registry) >= n and client.xlen(stream) == 0, what="the rest decided")
    summary = stop(second)
    assert summary["n_claimed"] >= held
    assert client.xpending(stream, "lorarffi-workers")["pending"] == 0
    check_decisions(audit(pg_registry), reference, runs)  # none lost, none logged twice


def test_redis_restarted_mid_run_loses_nothing_uncounted(
    world, halves, reference, pg_registry, queue, redis_server
) -> None:
    w = worker(world, queue, pg_registry, "w")
    joined(redis_server.url, queue, 1, [w])
    # node a at half real time with a big buffer (nothing may drop); node b with a buffer of 2 (drops counted)
    nodes = [node(halves[0], queue, "a", "--speed", "0.5"), node(halves[1], queue, "b", "--speed", "0.5",
                                                               "--queue-buffer", "2")]  # fmt: skip
    wait_for(lambda: {r.source.split("/")[0] for r in audit(pg_registry)} == {"a", "b"}, what="both nodes")
    redis_server.stop()  # both nodes are streaming: the outage falls inside their recordings
    time.sleep(1.5)
    redis_server.start()  # the same port, its append-only file reloaded
    summaries = []
    for p in nodes:
        summary, err = finish(p)
        summaries.append(summary["sinks"]["queue"])
    runs = {q["node_id"]: q["run"] for q in summaries}
    dropped = {q["node_id"]: q["n_dropped"] for q in summaries}
    assert dropped["a"] == 0 and dropped["b"] >= 1 and all(q["n_undelivered"] == 0 for q in summaries)
    assert [q["n_disconnects"] >= 1 for q in summaries if q["node_id"] == "b"] == [True]  # b met it
    n = len(reference["a"]) + len(reference["b"])
    wait_for(lambda: decided(pg_registry) >= n, what="a decision or a loss record per packet")
    stop(w)
    rows = audit(pg_registry)
    lost = [r for r in rows if r.verdict == LOST_VERDICT]
    assert len(lost) == dropped["b"]  # every drop is a loss record, under the packet's own key
    assert {r.packet_key for r in lost} <= {packet_key("b", runs["b"], s) for s, *_ in reference["b"]}
    gone = {r.packet_key for r in lost}
    kept = {k: [x for x in reference[k] if packet_key(k, runs[k], x[0]) not in gone] for k in reference}
    check_decisions([r for r in rows if r.verdict != LOST_VERDICT], kept, runs)


def test_postgresql_restarted_mid_run_nothing_acknowledged_before_it_is_stored(
    world, halves, reference, pg_registry, queue, redis_server, postgres_server
) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    stream = queue.rsplit("/", 1)[1]
    w = worker(world, queue, pg_registry, "w", "--batch", "2")
    joined(redis_server.url, queue, 1, [w])  # up: its registry read, its connection to the database open
    postgres_server.stop()
    try:
        runs = node_runs([node(halves[0], queue, "a"), node(halves[1], queue, "b")])
        n = len(reference["a"]) + len(reference["b"])
        wait_for(lambda: client.xpending(stream, "lorarffi-workers")["pending"] >= 1, what="a batch in hand")
        time.sleep(1.0)  # the worker meets the outage and retries
        assert client.xlen(stream) == n  # nothing acknowledged (acknowledged entries are deleted)
        assert 1 <= client.xpending(stream, "lorarffi-workers")["pending"] <= 2
    finally:
        postgres_server.start()
    wait_for(lambda: decided(pg_registry) >= n, what="every packet decided after the restart")
    summary = stop(w)
    assert summary["n_retries"] >= 1
    check_decisions(audit(pg_registry), reference, runs)


def test_a_worker_asked_to_stop_while_it_loads_its_model_stops_with_a_summary(
    world, pg_registry, queue, monkeypatch, capsys
) -> None:
    """SIGTERM before the worker exists (here: while its registry stage is made) is not lost and does not
    kill it: the worker stops as soon as it is made, prints its summary and exits 0."""
    from lorarffi.live.stages import RegistryStage

    made = RegistryStage.from_paths

    def signalled_while_loading(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the handler in this, the main, thread
        return made(*args, **kwargs)

    monkeypatch.setattr(RegistryStage, "from_paths", signalled_while_loading)
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
    previous = signal.getsignal(signal.SIGTERM)
    assert main(["worker", "--queue", queue, "--model", str(world["model"]), "--registry", pg_registry,
                 "--consumer", "early", "--json"]) == 0  # fmt: skip
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    summary = lines[-1]["summary"]
    assert summary["n_entries"] == 0 and summary["consumer"] == "early"
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is handed back
