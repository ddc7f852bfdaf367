"""Drift tracking shared by several processes on one registry, on a SQLite file and on a real PostgreSQL
server: movements recorded from stale reads add up (none lost), a process that refreshes decides with what
the others stored, the spread's sum is floored, one writer stores bit for bit what it tracked, and two
authenticators taking turns on one registry store exactly what one authenticator deciding every batch does.

Enrollment CFOs and movements are chosen as small dyadic numbers, so their sums are exact in float64 and are
compared with ``==``.
"""

# ruff: noqa: F811 - pytest fixtures imported from other modules are redefined as arguments

from __future__ import annotations

import itertools
import multiprocessing

import numpy as np
import pytest
from servers import PG_PASSWORD, postgres_server  # noqa: F401 - a module fixture
from test_rffi_authenticate import _clusters

from lorarffi.rffi.authenticate import Authenticator, decide_packets
from lorarffi.rffi.embedding import Embedder
from lorarffi.rffi.registry import AuditRow, Registry
from lorarffi.rffi.registry.store import MIN_CFO_STD_HZ

FP = "sha256:" + "d" * 64
DIM = 16
CARRIER_HZ = 868.1e6
_numbers = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def new_url(request, tmp_path, monkeypatch):
    """Makes fresh empty registry locations on the engine of the parameter."""
    if request.param == "sqlite":
        return lambda: str(tmp_path / f"r{next(_numbers)}.db")
    server = request.getfixturevalue("postgres_server")
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
    return lambda: server.create_database(f"drift{next(_numbers)}").replace(f":{PG_PASSWORD}@", "@")


def _one_device(url: str) -> None:
    """Device 7 with CFO mean 1000 Hz and spread 10 Hz (exact)."""
    with Registry.create(url, model_fingerprint=FP, embedding_dim=DIM) as reg:
        reg.enroll_device(7, np.ones((2, DIM), np.float32), cfo_hz=[990.0, 1010.0])


def test_movements_of_two_handles_from_one_read_add_up(new_url) -> None:
    url = new_url()
    _one_device(url)
    with Registry.open(url) as a, Registry.open(url) as b:
        assert a.cfo_centres() == b.cfo_centres() == {7: (1000.0, 10.0)}
        a.record_decisions([AuditRow("accept", device_id=7)], cfo_tracked={7: (1000.0, 10.0, 1012.5, 8.0)})
        b.record_decisions([AuditRow("accept", device_id=7)], cfo_tracked={7: (1000.0, 10.0, 995.75, 10.5)})
        # both measured from the same read: an overwrite would leave b's 995.75 Hz and 10.5 Hz
        assert b.cfo_centres() == {7: (1000.0 + 12.5 - 4.25, 10.0 - 2.0 + 0.5)}
        rec = a.device(7)
        assert (rec.cfo_min_hz, rec.cfo_max_hz) == (990.0, 1010.0)  # the enrollment range stays
        assert [r.device_id for r in a.audit()] == [7, 7]


def test_a_handle_that_refreshes_decides_with_the_others_movement(new_url) -> None:
    url = new_url()
    _one_device(url)
    with Registry.open(url) as a, Registry.open(url) as b:
        a.enroll_device(8, -np.ones((2, DIM), np.float32), cfo_hz=[-1000.0, -990.0])  # a threshold needs two
        auth = Authenticator.from_registry(b, drift_tracking=True)
        a.record_decisions([], cfo_tracked={7: (1000.0, 10.0, 1250.0, 16.0)})
        assert (auth.gate.center_hz.tolist(), auth.gate.tracked_std_hz.tolist()) == (
            [1000.0, -995.0],
            [10.0, 5.0],
        )
        auth.refresh_cfo(b)
        assert (auth.gate.center_hz.tolist(), auth.gate.tracked_std_hz.tolist()) == (
            [1250.0, -995.0],
            [16.0, 5.0],
        )
        # the gate's window is about the shared centre: a CFO inside it only after the refresh
        lam = float(auth.gate.lambda_hz[0])
        assert auth._cfo_ok(np.array([1250.0 + lam - 1.0]), np.array([0])).tolist() == [True]
        assert 1250.0 + lam - 1.0 - 1000.0 > lam


def test_the_spread_of_concurrent_shrinkings_is_floored(new_url) -> None:
    url = new_url()
    _one_device(url)
    with Registry.open(url) as a, Registry.open(url) as b:
        a.record_decisions([], cfo_tracked={7: (1000.0, 10.0, 1000.0, 2.0)})
        b.record_decisions([], cfo_tracked={7: (1000.0, 10.0, 1000.0, 2.0)})  # 2 - 8 Hz: no spread
        assert a.cfo_centres() == {7: (1000.0, MIN_CFO_STD_HZ)}


def test_one_writer_stores_bit_for_bit_what_it_tracked(new_url) -> None:
    url = new_url()
    with Registry.create(url, model_fingerprint=FP, embedding_dim=DIM) as reg:
        reg.enroll_device(7, np.ones((2, DIM), np.float32), cfo_hz=[3.25, 3.35])
        m0, s0 = reg.cfo_centres()[7]
        m1, s1 = 0.3, 0.07  # m0 + (m1 - m0) != m1 in float64: only storing the end value is exact
        assert m0 + (m1 - m0) != m1
        reg.record_decisions([], cfo_tracked={7: (m0, s0, m1, s1)})
        assert reg.cfo_centres() == {7: (m1, s1)}


def _move_worker(url: str, n_moves: int, barrier) -> None:
    with Registry.open(url) as reg:
        mean, std = reg.cfo_centres()[7]  # read once: every later move is measured from a stale value
        barrier.wait()
        for _ in range(n_moves):
            move = (mean, std, mean + 0.5, std + 0.25)
            reg.record_decisions([AuditRow("accept", device_id=7)], cfo_tracked={7: move})
            mean, std = mean + 0.5, std + 0.25


def test_two_processes_moving_one_device_lose_no_movement(new_url) -> None:
    url = new_url()
    _one_device(url)
    n_moves = 25
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_move_worker, args=(url, n_moves, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with Registry.open(url) as reg:
        assert reg.cfo_centres() == {7: (1000.0 + 2 * n_moves * 0.5, 10.0 + 2 * n_moves * 0.25)}
        assert len(reg.audit()) == 2 * n_moves


# -- two authenticators taking turns ------------------------------------------------------------------------
class _Vectors(Embedder):
    """An "embedder" whose preambles are already the embeddings (the decision path without a network)."""

    def __init__(self) -> None:  # no model: nothing to load
        pass

    def embed(self, preambles, *, batch_size: int = 64, progress=None) -> np.ndarray:
        return np.asarray(preambles, np.float32)


def _fleet(url: str, centres: np.ndarray, cfo_mean_hz: np.ndarray) -> None:
    ids, x, _ = _clusters(4, 30, DIM, 0.3, seed=11)
    rng = np.random.default_rng(12)
    with Registry.create(url, model_fingerprint=FP, embedding_dim=DIM) as reg:
        for j, d in enumerate(np.unique(ids)):
            cfo = cfo_mean_hz[j] + 20.0 * rng.standard_normal(30)
            reg.enroll_device(int(d), x[ids == d], cfo_hz=cfo, carrier_hz=CARRIER_HZ)


def test_two_authenticators_taking_turns_store_what_one_deciding_every_batch_does(new_url) -> None:
    _, _, centres = _clusters(4, 30, DIM, 0.3, seed=11)
    cfo_mean_hz = np.array([-3000.0, -1000.0, 1000.0, 3000.0])
    rng = np.random.default_rng(13)
    batches = []
    for b in range(6):  # each device's CFO drifts up 40 Hz a batch, inside its window
        dev = np.repeat(np.arange(4), 3)
        q = centres[dev] + 0.05 * rng.standard_normal((dev.size, DIM))
        batches.append(
            (q.astype(np.float32), cfo_mean_hz[dev] + 40.0 * (b + 1) + 5.0 * rng.standard_normal(12))
        )
    one_url, shared_url = new_url(), new_url()
    _fleet(one_url, centres, cfo_mean_hz)
    _fleet(shared_url, centres, cfo_mean_hz)
    emb = _Vectors()
    with Registry.open(one_url) as one, Registry.open(shared_url) as a, Registry.open(shared_url) as b:
        initial = one.cfo_centres()
        solo = Authenticator.from_registry(one, drift_tracking=True)
        turns = [(Authenticator.from_registry(r, drift_tracking=True), r) for r in (a, b)]
        for i, (q, cfo) in enumerate(batches):
            want = decide_packets(emb, solo, one, q, cfo_hz=cfo, source=f"b{i}")
            auth, reg = turns[i % 2]
            got = decide_packets(emb, auth, reg, q, cfo_hz=cfo, source=f"b{i}")
            assert got.decision == want.decision and got.decision == [100 + d for d in np.repeat(range(4), 3)]
        moved = one.cfo_centres()
        assert moved == a.cfo_centres()  # the same arithmetic on the same values: exact
        gate = solo.gate  # one writer: the registry holds bit for bit what its gate tracked
        assert moved == {
            int(d): (c, s)
            for d, c, s in zip(
                gate.device_ids, gate.center_hz.tolist(), gate.tracked_std_hz.tolist(), strict=True
            )
        }
        assert all(moved[d][1] != initial[d][1] for d in moved)  # the spreads moved too
        assert all(moved[d][0] > initial[d][0] + 20.0 for d in moved)  # tracking moved every centre up
        assert len(a.audit()) == len(one.audit()) == 6 * 12
