"""The device registry: embeddings stored bit for bit, re-enrollment, cascades, model binding, schema
versions and migration, concurrent writers, crashes mid-enrollment, damaged and foreign files, the portable
export."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import sqlite3
import statistics
import time
import zipfile
from datetime import datetime, timezone

import numpy as np
import pytest

from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.impairment import TxImpairments
from lorarffi.errors import ConfigError, InputDataError, ModelError
from lorarffi.rffi.checkpoint import ModelDirConfig
from lorarffi.rffi.registry import (
    SCHEMA_VERSION,
    AuditRow,
    Registry,
    export_registry,
    import_registry,
    model_fingerprint,
)

DIM = 8
FP = "sha256:" + "a" * 64
OTHER_FP = "sha256:" + "b" * 64


def _emb(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    return rng.standard_normal((n, dim)).astype(np.float32)


@pytest.fixture()
def path(tmp_path):
    return tmp_path / "fleet.db"


@pytest.fixture()
def reg(path):
    with Registry.create(path, model_fingerprint=FP, embedding_dim=DIM, model_info={"model": "test"}) as r:
        yield r


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# -- storage -------------------------------------------------------------------------------------------------
def test_embeddings_come_back_bit_exact_in_device_then_row_order(reg, path) -> None:
    rng = np.random.default_rng(1)
    a, b = _emb(rng, 5), _emb(rng, 3)
    # values a float round trip through text or float64 arithmetic could disturb
    b[0, :4] = [np.float32(1e-45), -0.0, np.finfo(np.float32).max, np.nextafter(np.float32(1), np.float32(2))]
    reg.enroll_device(30, a)
    reg.enroll_device(4, b)
    reg.close()
    with Registry.open(path, model_fingerprint=FP) as again:
        ids, emb = again.reference_embeddings()
    assert ids.dtype == np.int64 and ids.tolist() == [4] * 3 + [30] * 5
    assert emb.dtype == np.float32 and emb.shape == (8, DIM)
    assert emb.tobytes() == np.concatenate([b, a]).tobytes()


def test_empty_registry_has_no_embeddings(reg) -> None:
    ids, emb = reg.reference_embeddings()
    assert ids.shape == (0,) and emb.shape == (0, DIM) and emb.dtype == np.float32
    assert reg.devices() == [] and reg.threshold is None and reg.audit() == []


def test_enrollment_records_statistics_of_the_packets(reg) -> None:
    cfo_hz = [-1200.5, -1180.0, -1250.25, -1199.0]
    before = datetime.now(timezone.utc)
    rec = reg.enroll_device(
        12,
        _emb(np.random.default_rng(2), 4),
        name="meter 12",
        cfo_hz=cfo_hz,
        carrier_hz=868.1e6,
        notes="roof",
    )
    assert before <= rec.enrolled_at <= datetime.now(timezone.utc)
    assert (rec.device_id, rec.name, rec.n_packets, rec.n_embeddings) == (12, "meter 12", 4, 4)
    assert (rec.carrier_hz, rec.notes) == (868.1e6, "roof")
    # 4 float64 terms of magnitude ~1.2e3: rounding error far below 1e-9 Hz
    assert rec.cfo_mean_hz == pytest.approx(statistics.fmean(cfo_hz), abs=1e-9)
    assert rec.cfo_std_hz == pytest.approx(statistics.pstdev(cfo_hz), abs=1e-9)
    assert (rec.cfo_min_hz, rec.cfo_max_hz) == (-1250.25, -1180.0)
    assert reg.device(12) == rec and reg.devices() == [rec]


def test_reenrollment_replaces_embeddings_and_statistics_and_keeps_labels(reg) -> None:
    rng = np.random.default_rng(3)
    reg.enroll_device(7, _emb(rng, 6), name="gate", notes="east", cfo_hz=[10.0, 20.0])
    other = _emb(rng, 2)
    reg.enroll_device(8, other)
    new = _emb(rng, 3)
    rec = reg.enroll_device(7, new, cfo_hz=[100.0], n_packets=50)
    assert (rec.n_embeddings, rec.n_packets, rec.cfo_mean_hz, rec.cfo_std_hz) == (3, 50, 100.0, 0.0)
    assert (rec.name, rec.notes) == ("gate", "east")
    ids, emb = reg.reference_embeddings()
    assert ids.tolist() == [7, 7, 7, 8, 8]
    assert emb.tobytes() == np.concatenate([new, other]).tobytes()
    assert reg.enroll_device(7, new, name="gate 2").name == "gate 2"
    assert reg.enroll_device(7, new).cfo_mean_hz is None  # statistics are replaced, not kept


def test_remove_cascades_to_embeddings_and_keeps_audit(reg, path) -> None:
    rng = np.random.default_rng(4)
    reg.enroll_device(1, _emb(rng, 4))
    reg.enroll_device(2, _emb(rng, 3))
    reg.append_audit([AuditRow("accept", device_id=1, score=0.2)])
    removed = reg.remove(1)
    assert removed.device_id == 1 and removed.n_embeddings == 4
    assert [d.device_id for d in reg.devices()] == [2]
    assert reg.audit()[0].device_id == 1
    with sqlite3.connect(path) as db:  # the database itself holds no orphans
        assert db.execute("SELECT count(*) FROM embeddings WHERE device_id = 1").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM embeddings WHERE device_id = 2").fetchone() == (3,)
    with pytest.raises(ConfigError, match="device 1 is not enrolled"):
        reg.remove(1)


def test_foreign_key_cascade_is_in_the_schema(reg, path) -> None:
    reg.enroll_device(3, _emb(np.random.default_rng(5), 2))
    reg.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("DELETE FROM devices WHERE id = 3")
        assert db.execute("SELECT count(*) FROM embeddings").fetchone() == (0,)


def test_rename_and_unknown_devices(reg) -> None:
    reg.enroll_device(9, _emb(np.random.default_rng(6), 1), name="old")
    assert reg.rename(9, "new").name == "new" and reg.device(9).name == "new"
    assert reg.rename(9, None).name is None
    for call in (lambda: reg.device(10), lambda: reg.rename(10, "x")):
        with pytest.raises(ConfigError, match="device 10 is not enrolled"):
            call()


@pytest.mark.parametrize(
    ("device_id", "embeddings", "match"),
    [
        (-1, np.zeros((2, DIM), np.float32), "device_id=-1"),
        (True, np.zeros((2, DIM), np.float32), "device_id=True"),
        (2**31, np.zeros((2, DIM), np.float32), "device_id="),
        (1, np.zeros((2, DIM + 1), np.float32), r"shape \(2, 9\)"),
        (1, np.zeros((0, DIM), np.float32), r"shape \(0, 8\)"),
        (1, np.zeros(DIM, np.float32), r"shape \(8,\)"),
        (1, np.zeros((2, DIM), np.int32), "dtype int32"),
        (1, np.full((2, DIM), np.nan, np.float32), "non-finite"),
    ],
)
def test_enrollment_refuses_bad_input(reg, device_id, embeddings, match) -> None:
    with pytest.raises(ConfigError, match=match):
        reg.enroll_device(device_id, embeddings)
    assert reg.devices() == []


def test_enrollment_refuses_non_finite_cfo(reg) -> None:
    with pytest.raises(ConfigError, match="cfo_hz holds 1 non-finite"):
        reg.enroll_device(1, np.zeros((1, DIM), np.float32), cfo_hz=[1.0, math.inf])


# -- threshold and audit -------------------------------------------------------------------------------------
def test_threshold_round_trip_and_validation(reg, path) -> None:
    set_ = reg.set_threshold(0.4375, far=0.01, method="leave-one-out enrollment packets", k=15)
    reg.close()
    with Registry.open(path) as again:
        assert again.threshold == set_
        assert (set_.value, set_.far, set_.k) == (0.4375, 0.01, 15)
        for kwargs, match in [
            ({"value": math.nan, "far": 0.01, "method": "m"}, "threshold="),
            ({"value": 1.0, "far": 0.0, "method": "m"}, "far=0.0"),
            ({"value": 1.0, "far": 1.0, "method": "m"}, "far=1.0"),
            ({"value": 1.0, "far": 0.1, "method": " "}, "method="),
            ({"value": 1.0, "far": 0.1, "method": "m", "k": 0}, "k=0"),
        ]:
            with pytest.raises(ConfigError, match=match):
                again.set_threshold(**kwargs)
        assert again.threshold == set_


def test_audit_rows_round_trip_in_order(reg) -> None:
    t0 = datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)
    rows = [
        AuditRow(
            "accept",
            device_id=3,
            score=0.125,
            source="rx0",
            start_sample=2**40,
            cfo_hz=-1500.5,
            snr_db=17.25,
            time_utc=t0,
        ),
        AuditRow(
            "rogue",
            score=np.float32(2.5),
            source="rx0",
            start_sample=np.int64(7),
            cfo_hz=math.nan,
            model_fingerprint="sha256:other",
        ),
    ]
    before = datetime.now(timezone.utc)
    assert reg.append_audit(rows) == 2 and reg.append_audit([]) == 0
    got = reg.audit()
    assert [r.audit_id for r in got] == [1, 2]
    assert got[0] == AuditRow("accept", 3, 0.125, "rx0", 2**40, -1500.5, 17.25, t0, FP, audit_id=1)
    assert (got[1].verdict, got[1].device_id, got[1].score, got[1].cfo_hz) == ("rogue", None, 2.5, None)
    assert got[1].model_fingerprint == "sha256:other" and got[1].start_sample == 7
    assert before <= got[1].time_utc <= datetime.now(timezone.utc)
    reg.append_audit([AuditRow("accept", device_id=i) for i in range(5)])
    assert [r.device_id for r in reg.audit(limit=3)] == [2, 3, 4]
    with pytest.raises(ConfigError, match="verdict"):
        reg.append_audit([AuditRow("")])
    assert len(reg.audit()) == 7  # the refused batch appended nothing


def test_audit_log_is_append_only_in_the_database(reg, path) -> None:
    reg.append_audit([AuditRow("accept", device_id=1)])
    with sqlite3.connect(path) as db:
        for sql in ("UPDATE audit SET verdict = 'rogue'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(sql)
    assert reg.audit()[0].verdict == "accept"


def _append_worker(path: str, worker: int, n_batches: int, batch: int, barrier) -> None:
    with Registry.open(path, model_fingerprint=FP) as r:
        for b in range(n_batches):
            if b % 5 == 0:
                barrier.wait(timeout=60)  # keeps the two in step, so their writes really overlap
            r.rename(1, f"w{worker} {b}")  # a write transaction that reads first
            r.append_audit(
                [AuditRow("accept", source=f"w{worker}", start_sample=b * batch + i) for i in range(batch)]
            )


@pytest.mark.slow
def test_two_processes_appending_audit_rows_lose_none(reg, path) -> None:
    reg.enroll_device(1, np.zeros((1, DIM), np.float32))
    n_batches, batch = 40, 100
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_append_worker, args=(str(path), w, n_batches, batch, barrier)) for w in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    rows = reg.audit()
    assert len(rows) == 2 * n_batches * batch
    assert reg.device(1).name in (f"w0 {n_batches - 1}", f"w1 {n_batches - 1}")
    keys = {(r.source, r.start_sample) for r in rows}
    assert keys == {(f"w{w}", i) for w in (0, 1) for i in range(n_batches * batch)}


# -- crashes -------------------------------------------------------------------------------------------------
KILL_N, KILL_DIM = 5000, 128  # 2.6 MB of embeddings: more than SQLite's page cache, so pages spill to the WAL


def _enroll_then_hang(path: str, device_id: int, when: str, inside) -> None:
    from sqlalchemy import event

    with Registry.open(path) as r:
        if when == "inside":

            def hang(conn, cursor, statement, *args) -> None:
                if statement.startswith("INSERT INTO embeddings"):
                    inside.set()
                    time.sleep(120)  # killed here, inside the transaction, every embedding inserted

            event.listen(r.engine, "after_cursor_execute", hang)
        r.enroll_device(device_id, np.ones((KILL_N, KILL_DIM), np.float32), name="new")
        inside.set()
        time.sleep(120)  # killed here, after the commit


@pytest.mark.slow
@pytest.mark.parametrize(
    ("device_id", "when", "expected"),
    [(5, "inside", "old"), (6, "inside", "old"), (5, "after", "new")],
)
def test_kill_9_during_enrollment_leaves_the_registry_consistent(tmp_path, device_id, when, expected) -> None:
    path = tmp_path / "kill.db"
    old = np.random.default_rng(7).standard_normal((3, KILL_DIM)).astype(np.float32)
    with Registry.create(path, model_fingerprint=FP, embedding_dim=KILL_DIM) as r:
        r.enroll_device(5, old, name="old")
    ctx = multiprocessing.get_context("spawn")
    inside = ctx.Event()
    child = ctx.Process(target=_enroll_then_hang, args=(str(path), device_id, when, inside))
    child.start()
    try:
        assert inside.wait(timeout=120), "the child never reached the enrollment"
        wal_bytes = os.path.getsize(f"{path}-wal")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL
    assert wal_bytes > 0  # the pages of the killed (or committed) transaction were in the WAL
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with Registry.open(path) as r:
        devices = {d.device_id: d for d in r.devices()}
        ids, emb = r.reference_embeddings()
    assert set(devices) == {5}  # a new device killed mid-enrollment is absent
    if expected == "new":
        assert (devices[5].name, devices[5].n_embeddings) == ("new", KILL_N)
        assert ids.tolist() == [5] * KILL_N and np.all(emb == 1.0)
    else:  # device 5 is as it was before the killed enrollment
        assert (devices[5].name, devices[5].n_embeddings) == ("old", 3)
        assert ids.tolist() == [5] * 3 and emb.tobytes() == old.tobytes()


# -- binding to a model, versions, files that are not registries ---------------------------------------------
def test_another_model_is_refused_in_one_line(reg, path) -> None:
    reg.close()
    with pytest.raises(ModelError) as exc:
        Registry.open(path, model_fingerprint=OTHER_FP)
    line = _one_line(exc)
    assert str(path) in line and FP in line and OTHER_FP in line
    with Registry.open(path, model_fingerprint=FP) as again:
        assert again.model_fingerprint == FP and again.model_info == {"model": "test"}


def test_create_exist_ok_opens_but_refuses_another_model_or_embedding_size(tmp_path) -> None:
    p = tmp_path / "r.db"
    with Registry.create(p, model_fingerprint=FP, embedding_dim=DIM, exist_ok=True) as r:
        r.enroll_device(1, np.zeros((1, DIM), np.float32))
    with Registry.create(p, model_fingerprint=FP, embedding_dim=DIM, exist_ok=True) as r:
        assert [d.device_id for d in r.devices()] == [1]
    with pytest.raises(ModelError, match="8-d embeddings, the model makes 16-d"):
        Registry.create(p, model_fingerprint=FP, embedding_dim=16, exist_ok=True)
    with pytest.raises(ModelError, match=OTHER_FP):
        Registry.create(p, model_fingerprint=OTHER_FP, embedding_dim=DIM, exist_ok=True)


def test_create_refuses_an_existing_file(reg, path) -> None:
    with pytest.raises(InputDataError, match="already exists"):
        Registry.create(path, model_fingerprint=FP, embedding_dim=DIM)
    with pytest.raises(InputDataError, match="no such directory"):
        Registry.create(path.parent / "missing" / "r.db", model_fingerprint=FP, embedding_dim=DIM)


def test_a_newer_schema_is_refused_in_one_line(reg, path) -> None:
    reg.close()
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (json.dumps(SCHEMA_VERSION + 1),)
        )
    with pytest.raises(InputDataError) as exc:
        Registry.open(path)
    assert _one_line(exc) == (
        f"{path}: registry schema version {SCHEMA_VERSION + 1} is newer than this software reads "
        f"({SCHEMA_VERSION}); upgrade lora-rffi"
    )


V1_SCHEMA = """
CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE devices (id INTEGER PRIMARY KEY, name TEXT, enrolled_at DATETIME NOT NULL,
    n_packets INTEGER NOT NULL, cfo_mean_hz FLOAT, cfo_std_hz FLOAT, cfo_min_hz FLOAT, cfo_max_hz FLOAT,
    notes TEXT);
CREATE TABLE embeddings (device_id INTEGER REFERENCES devices (id) ON DELETE CASCADE, row_index INTEGER,
    vector BLOB NOT NULL, PRIMARY KEY (device_id, row_index));
CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time_utc DATETIME NOT NULL, source TEXT NOT NULL,
    start_sample BIGINT, cfo_hz FLOAT, snr_db FLOAT, device_id INTEGER, score FLOAT,
    verdict VARCHAR(32) NOT NULL, model_fingerprint VARCHAR(128) NOT NULL);
"""


def test_a_version_1_registry_is_migrated_on_open(tmp_path) -> None:
    path = tmp_path / "v1.db"
    vec = np.arange(2 * DIM, dtype="<f4").reshape(2, DIM) / 3
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
        meta = {
            "format": "lora-rffi-registry",
            "schema_version": 1,
            "model_fingerprint": FP,
            "embedding_dim": DIM,
            "model_info": {},
            "created_at": "2025-01-02T03:04:05+00:00",
        }
        db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        db.execute(
            "INSERT INTO devices VALUES (4, 'v1 device', '2025-01-02 03:04:05.000000', 2, -900.0, 5.0, "
            "-905.0, -895.0, 'kept')"
        )
        db.executemany(
            "INSERT INTO embeddings VALUES (4, ?, ?)", [(i, v.tobytes()) for i, v in enumerate(vec)]
        )
    with Registry.open(path, model_fingerprint=FP) as r:
        assert r.schema_version == SCHEMA_VERSION == 5
        (dev,) = r.devices()
        assert (dev.device_id, dev.name, dev.notes, dev.carrier_hz, dev.cfo_mean_hz, dev.iq_image_re) == (
            4,
            "v1 device",
            "kept",
            None,
            -900.0,
            None,
        )
        assert dev.enrolled_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        assert r.reference_embeddings()[1].tobytes() == vec.tobytes()
        assert r.enroll_device(5, vec, carrier_hz=868.3e6).carrier_hz == 868.3e6
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with Registry.open(path) as r:  # opening a current registry migrates nothing
        assert [d.carrier_hz for d in r.devices()] == [None, 868.3e6]


def _registry_bytes(tmp_path) -> bytes:
    p = tmp_path / "source.db"
    with Registry.create(p, model_fingerprint=FP, embedding_dim=DIM) as r:
        for i in range(20):
            r.enroll_device(i, _emb(np.random.default_rng(i), 50))
    return p.read_bytes()


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("random bytes", "not a readable lora-rffi registry: file is not a database"),
        ("empty file", "not a lora-rffi registry (no 'meta' table)"),
        ("foreign sqlite", "not a lora-rffi registry (no 'meta' table)"),
        ("foreign meta", "not a lora-rffi registry (format 'other')"),
        ("damaged pages", "database disk image is malformed"),
        ("missing", "no such registry file"),
    ],
)
def test_files_that_are_not_registries_are_refused_in_one_line(tmp_path, kind, problem) -> None:
    bad = tmp_path / "bad.db"
    rng = np.random.default_rng(8)
    if kind == "random bytes":
        bad.write_bytes(rng.bytes(50_000))
    elif kind == "empty file":
        bad.write_bytes(b"")
    elif kind in ("foreign sqlite", "foreign meta"):
        with sqlite3.connect(bad) as db:
            if kind == "foreign sqlite":
                db.execute("CREATE TABLE readings (t REAL, v REAL)")
            else:
                db.execute("CREATE TABLE meta (key TEXT, value TEXT)")
                db.execute("INSERT INTO meta VALUES ('format', '\"other\"')")
    elif kind == "damaged pages":
        data = bytearray(_registry_bytes(tmp_path))
        data[4096:] = rng.bytes(len(data) - 4096)  # every page but the first (the schema)
        bad.write_bytes(bytes(data))
    before = bad.read_bytes() if bad.exists() else None
    with pytest.raises(InputDataError) as exc:
        Registry.open(bad)
    line = _one_line(exc)
    assert line.startswith(f"{bad}: ") and problem in line, line
    assert (bad.read_bytes() if bad.exists() else None) == before  # never modified


# -- portable files ------------------------------------------------------------------------------------------
@pytest.fixture()
def filled(reg):
    rng = np.random.default_rng(9)
    image, leakage = np.array([0.01 + 0.02j, 0.03 + 0.02j]), np.array([0.1j, -0.1j])
    iq = TxImpairments(image, leakage, np.full(2, 0.02), np.full(2, 0.02))
    reg.enroll_device(3, _emb(rng, 4), name="a", cfo_hz=[1.0, 2.0], carrier_hz=868.1e6, notes="n", iq=iq)
    reg.enroll_device(11, _emb(rng, 2))
    reg.set_threshold(0.75, far=0.01, method="leave-one-out", k=15)
    reg.append_audit([AuditRow("accept", device_id=3)])
    return reg


def test_export_import_round_trip(filled, tmp_path) -> None:
    out = export_registry(filled, tmp_path / "fleet.lrr")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    summary = import_registry(out, tmp_path / "site2.db")
    assert (summary.device_ids, summary.n_embeddings, summary.created) == ((3, 11), 6, True)
    with Registry.open(tmp_path / "site2.db", model_fingerprint=FP) as r:
        assert r.devices() == filled.devices()
        three, eleven = r.devices()
        # the IQ statistics travel: complex means; spreads about them with the means' standard error (0.02 /
        # sqrt 2) added in quadrature
        spread_image, spread_leakage = np.hypot(0.01, 0.02 / np.sqrt(2)), np.hypot(0.1, 0.02 / np.sqrt(2))
        assert (three.iq_image_re, three.iq_image_im, three.iq_image_std) == pytest.approx(
            (0.02, 0.02, spread_image))
        assert (three.iq_leakage_re, three.iq_leakage_im, three.iq_leakage_std) == pytest.approx(
            (0, 0, spread_leakage))
        assert eleven.iq_image_re is None and eleven.iq_leakage_std is None
        assert r.threshold == filled.threshold
        assert r.model_info == filled.model_info and r.embedding_dim == DIM
        a, b = r.reference_embeddings(), filled.reference_embeddings()
        assert a[0].tolist() == b[0].tolist() and a[1].tobytes() == b[1].tobytes()
        assert r.audit() == []  # the audit log stays at its site


def test_iq_statistics_of_schema_4_are_kept_as_the_one_step_fits_and_left_out_of_the_gate(
    filled, path, caplog
) -> None:
    """A schema-4 registry's IQ statistics came from the one-step fit: version 5 names them so, and the IQ
    gate, which compares packets only with statistics of the fit that measures them, leaves them out."""
    from lorarffi.dsp.impairment import IQ_FIT, iq_fit_name
    from lorarffi.rffi.authenticate import Authenticator

    before = filled.devices()
    assert before[0].iq_fit == IQ_FIT and before[1].iq_fit is None
    filled.close()
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE devices DROP COLUMN iq_fit")
        db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    with Registry.open(path, model_fingerprint=FP) as r:
        three, eleven = r.devices()
        assert r.schema_version == 5
        assert (three.iq_fit, eleven.iq_fit) == (iq_fit_name(0), None)
        assert three.iq_image_re == before[0].iq_image_re and three.iq_leakage_std == before[0].iq_leakage_std
        with caplog.at_level("WARNING"):
            auth = Authenticator.from_registry(r, k=2)
        assert auth.iq_gate is None  # no device with statistics of today's fit
        warning = f"1 device(s) have IQ statistics of another IQ fit ({iq_fit_name(0)}, not {IQ_FIT})"
        assert warning in caplog.text
        r.enroll_device(3, _emb(np.random.default_rng(1), 4), iq=_iq(4))  # enrolled again: gated
        assert r.device(3).iq_fit == IQ_FIT
        assert Authenticator.from_registry(r, k=2).iq_gate.device_ids.tolist() == [3]


def _iq(n: int) -> TxImpairments:
    rng = np.random.default_rng(n)
    z = rng.standard_normal((2, n)) + 1j * rng.standard_normal((2, n))
    return TxImpairments(0.05 + 0.01 * z[0], 0.1 + 0.01 * z[1], np.full(n, 0.01), np.full(n, 0.01))


def test_an_export_made_before_schema_5_imports_its_iq_statistics_as_the_one_step_fits(
    filled, tmp_path
) -> None:
    from lorarffi.dsp.impairment import IQ_FIT, iq_fit_name
    from lorarffi.rffi.registry import portable

    out = export_registry(filled, tmp_path / "fleet.lrr")
    with zipfile.ZipFile(out) as zf:
        manifest, npy = json.loads(zf.read("manifest.json")), zf.read("embeddings.npy")
    assert [d["iq_fit"] for d in manifest["devices"]] == [IQ_FIT, None]
    for d in manifest["devices"]:
        del d["iq_fit"]  # as exports made before the fit was kept
    body = {k: v for k, v in manifest.items() if k != "content_sha256"}
    manifest["content_sha256"] = portable._content_sha256(body)
    old = tmp_path / "old.lrr"
    with zipfile.ZipFile(old, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("embeddings.npy", npy)
    import_registry(old, tmp_path / "site3.db")
    with Registry.open(tmp_path / "site3.db") as r:
        three, eleven = r.devices()
        assert (three.iq_fit, eleven.iq_fit) == (iq_fit_name(0), None)
        assert three.iq_image_re == filled.device(3).iq_image_re and three.name == "a"


def test_import_merges_into_a_registry_of_the_same_model(filled, tmp_path) -> None:
    out = filled.export(tmp_path / "fleet.lrr")
    with Registry.create(tmp_path / "b.db", model_fingerprint=FP, embedding_dim=DIM) as other:
        other.enroll_device(3, np.zeros((1, DIM), np.float32), name="stale")
        other.enroll_device(50, np.zeros((1, DIM), np.float32))
    summary = Registry.import_(out, tmp_path / "b.db")
    assert summary.created is False
    with Registry.open(tmp_path / "b.db") as r:
        assert [(d.device_id, d.name, d.n_embeddings) for d in r.devices()] == [
            (3, "a", 4),
            (11, None, 2),
            (50, None, 1),
        ]
        assert r.threshold is None  # a merge keeps the target's threshold
    with Registry.create(tmp_path / "c.db", model_fingerprint=OTHER_FP, embedding_dim=DIM):
        pass
    with pytest.raises(ModelError, match=OTHER_FP):
        import_registry(out, tmp_path / "c.db")
    with pytest.raises(ModelError, match=OTHER_FP):
        import_registry(out, tmp_path / "d.db", model_fingerprint=OTHER_FP)
    assert not (tmp_path / "d.db").exists()


def _rewrite(src, dst, edit) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, edit(name, zin.read(name)))


def _flip_last_byte(name: str, data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1]) if name == "embeddings.npy" else data


def _rename_device(name: str, data: bytes) -> bytes:
    return data.replace(b'"name": "a"', b'"name": "b"') if name == "manifest.json" else data


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (_flip_last_byte, "embeddings.npy does not match the manifest's sha256 (edited or damaged)"),
        (_rename_device, "the manifest does not match its content_sha256 (edited or damaged)"),
        (None, "not a lora-rffi registry export"),
    ],
)
def test_edited_or_foreign_exports_are_refused(filled, tmp_path, edit, problem) -> None:
    out = filled.export(tmp_path / "fleet.lrr")
    bad = tmp_path / "bad.lrr"
    if edit is None:
        bad.write_bytes(b"PK not really a zip")
    else:
        _rewrite(out, bad, edit)
        assert bad.read_bytes() != out.read_bytes()
    with pytest.raises(InputDataError) as exc:
        import_registry(bad, tmp_path / "new.db")
    line = _one_line(exc)
    assert line.startswith(f"{bad}: ") and problem in line, line
    assert not (tmp_path / "new.db").exists()


# -- the model fingerprint -----------------------------------------------------------------------------------
def test_model_fingerprint_is_the_recorded_weights_hash(tmp_path) -> None:
    config = ModelDirConfig(
        "infocom_cnn", {"n_classes": 2}, {"name": "channel_independent_spectrogram"}, LoRaConfig(), (1, 2)
    ).to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**config, "weights_sha256": "c0ffee" * 4}))
    assert model_fingerprint(tmp_path) == "sha256:" + "c0ffee" * 4
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="no weights_sha256"):
        model_fingerprint(tmp_path)
    with pytest.raises(ModelError, match="not a model directory"):
        model_fingerprint(tmp_path / "nothing")
