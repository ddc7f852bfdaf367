"""The device registry on a real PostgreSQL server: the registry test-suite's storage, threshold, audit,
concurrent-writer and model-binding behaviours run again on ``postgresql://`` (the functions are imported
from ``test_rffi_registry`` and take this module's ``path`` and ``reg``), plus what only a server has:
the append-only trigger, migration of an old schema, the password from the environment or a password file
(never in messages or JSON), TLS options passed through, and the audit log's one row per packet key under
two concurrent writers (on SQLite too).
"""

# ruff: noqa: F811 - pytest fixtures imported from other modules are redefined as arguments

from __future__ import annotations

import itertools
import json
import multiprocessing

import pytest
from servers import PG_PASSWORD, postgres_server  # noqa: F401 - a module fixture
from test_rffi_registry import (  # noqa: F401 - collected here again, on PostgreSQL
    DIM,
    FP,
    test_another_model_is_refused_in_one_line,
    test_audit_rows_round_trip_in_order,
    test_embeddings_come_back_bit_exact_in_device_then_row_order,
    test_empty_registry_has_no_embeddings,
    test_enrollment_records_statistics_of_the_packets,
    test_enrollment_refuses_bad_input,
    test_reenrollment_replaces_embeddings_and_statistics_and_keeps_labels,
    test_rename_and_unknown_devices,
    test_threshold_round_trip_and_validation,
    test_two_processes_appending_audit_rows_lose_none,
)

from lorarffi.cli import main
from lorarffi.errors import InputDataError
from lorarffi.rffi.registry import SCHEMA_VERSION, AuditRow, Registry
from lorarffi.rffi.registry.engine import redact_url

_numbers = itertools.count()


@pytest.fixture()
def path(postgres_server, monkeypatch):
    """A fresh empty database's URL, without its password: libpq reads it from ``PGPASSWORD``."""
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)
    return postgres_server.create_database(f"t{next(_numbers)}").replace(f":{PG_PASSWORD}@", "@")


@pytest.fixture()
def reg(path):
    with Registry.create(path, model_fingerprint=FP, embedding_dim=DIM, model_info={"model": "test"}) as r:
        yield r


def test_the_registry_is_on_postgresql(reg, path) -> None:
    assert reg.engine.dialect.name == "postgresql" and reg.label == path
    assert reg.schema_version == SCHEMA_VERSION


def test_audit_log_is_append_only_on_postgresql(reg) -> None:
    import psycopg

    reg.append_audit([AuditRow("accept", device_id=1)])
    url = reg.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as db:
        for sql in ("UPDATE audit SET verdict = 'rogue'", "DELETE FROM audit", "TRUNCATE audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                db.execute(sql)
    assert [r.verdict for r in reg.audit()] == ["accept"]


V2_SCHEMA = """
CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE devices (id INTEGER PRIMARY KEY, name TEXT, enrolled_at TIMESTAMP WITH TIME ZONE NOT NULL,
    n_packets INTEGER NOT NULL, cfo_mean_hz FLOAT, cfo_std_hz FLOAT, cfo_min_hz FLOAT, cfo_max_hz FLOAT,
    carrier_hz FLOAT, notes TEXT);
CREATE TABLE embeddings (device_id INTEGER REFERENCES devices (id) ON DELETE CASCADE, row_index INTEGER,
    vector BYTEA NOT NULL, PRIMARY KEY (device_id, row_index));
CREATE TABLE audit (id BIGSERIAL PRIMARY KEY, time_utc TIMESTAMP WITH TIME ZONE NOT NULL,
    source TEXT NOT NULL, start_sample BIGINT, cfo_hz FLOAT, snr_db FLOAT, device_id INTEGER, score FLOAT,
    verdict VARCHAR(32) NOT NULL, model_fingerprint VARCHAR(128) NOT NULL);
"""


def test_a_version_2_registry_is_migrated_on_open(path) -> None:
    import psycopg

    meta = {
        "format": "lora-rffi-registry",
        "schema_version": 2,
        "model_fingerprint": FP,
        "embedding_dim": DIM,
        "model_info": {},
        "created_at": "2025-01-02T03:04:05+00:00",
    }
    with psycopg.connect(path, autocommit=True) as db:
        db.execute(V2_SCHEMA)
        for k, v in meta.items():
            db.execute("INSERT INTO meta VALUES (%s, %s)", (k, json.dumps(v)))
        db.execute(
            "INSERT INTO audit (time_utc, source, verdict, model_fingerprint) "
            "VALUES (now(), 'old', 'accept', 'x')"
        )
    with Registry.open(path, model_fingerprint=FP) as r:
        assert r.schema_version == SCHEMA_VERSION
        assert [(a.source, a.packet_key) for a in r.audit()] == [("old", None)]
        assert (
            r.append_audit([AuditRow("accept", packet_key="n/1/5"), AuditRow("accept", packet_key="n/1/5")])
            == 1
        )
    with psycopg.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )


# -- passwords, TLS ------------------------------------------------------------------------------------------
def test_passwords_come_from_the_environment_or_a_password_file_and_are_never_shown(
    postgres_server,
    tmp_path,
    monkeypatch,
    capsys,
) -> None:
    with_password = postgres_server.create_database(f"t{next(_numbers)}")
    bare = with_password.replace(f":{PG_PASSWORD}@", "@")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(InputDataError) as exc:  # no password anywhere: refused in one line
        Registry.create(bare, model_fingerprint=FP, embedding_dim=DIM)
    assert "password" in str(exc.value) and "\n" not in str(exc.value)
    with Registry.create(with_password, model_fingerprint=FP, embedding_dim=DIM) as r:  # in the URL
        assert PG_PASSWORD not in r.label and "***" in r.label and PG_PASSWORD not in repr(r)
    wrong = with_password.replace(PG_PASSWORD, "not-the-password")
    with pytest.raises(InputDataError) as exc:
        Registry.open(wrong)
    assert "not-the-password" not in str(exc.value) and "authentication failed" in str(exc.value)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres_server.port}:*:lorarffi:{PG_PASSWORD}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    assert main(["registry", "list", bare, "--json"]) == 0  # from the password file
    out = capsys.readouterr().out
    assert json.loads(out)["registry"] == bare and PG_PASSWORD not in out
    passfile.unlink()
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)  # from the environment
    assert main(["registry", "list", with_password, "--json"]) == 0
    out = capsys.readouterr().out
    assert PG_PASSWORD not in out and json.loads(out)["registry"] == redact_url(with_password)


def test_tls_options_pass_through_to_the_server(path) -> None:
    # the test server speaks no TLS: sslmode=require must reach libpq and fail there, sslmode=disable work
    with pytest.raises(InputDataError, match="SSL"):
        Registry.create(path + "?sslmode=require", model_fingerprint=FP, embedding_dim=DIM)
    with Registry.create(path + "?sslmode=disable", model_fingerprint=FP, embedding_dim=DIM) as r:
        assert "sslmode=disable" in r.label


# -- one audit row per packet key, two writers ---------------------------------------------------------------
def _keyed_writer(where: str, worker: int, n: int, barrier) -> None:
    with Registry.open(where, model_fingerprint=FP) as r:
        barrier.wait(timeout=60)
        for b in range(0, n, 10):  # both write every key, in batches that overlap in time
            r.append_audit(
                [AuditRow("accept", device_id=worker, source="node", start_sample=i, packet_key=f"node/r/{i}")
                 for i in range(b, b + 10)]
            )  # fmt: skip


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_keyed_audit_rows_are_logged_once_under_two_concurrent_writers(backend, request, tmp_path) -> None:
    where = str(tmp_path / "k.db") if backend == "sqlite" else request.getfixturevalue("path")
    n = 200
    with Registry.create(where, model_fingerprint=FP, embedding_dim=DIM) as r:
        assert r.append_audit([AuditRow("accept", packet_key="node/r/0")] * 2) == 1
        assert r.append_audit([AuditRow("accept"), AuditRow("accept")]) == 2  # rows without a key: all kept
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_keyed_writer, args=(where, w, n, barrier)) for w in (0, 1)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
            assert p.exitcode == 0
        rows = r.audit()
    keyed = [row.packet_key for row in rows if row.packet_key is not None]
    assert sorted(keyed) == sorted(f"node/r/{i}" for i in range(n))  # each key once, none lost
    assert len(rows) == n + 2


def test_two_processes_setting_the_threshold_at_once_both_succeed(reg, path) -> None:
    """Workers starting together each choose and store the threshold: the second write waits for the first
    and replaces it (a delete-then-insert would hit the first's new row and fail)."""
    import threading

    from lorarffi.rffi.registry import queries

    other = Registry.open(path)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            other.set_threshold(0.25, far=0.01, method="the second worker's choice", k=15)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        with reg._write() as conn:  # the first worker's write, not yet committed
            queries.write_meta(conn, "threshold", {"value": 0.5, "far": 0.01, "method": "first", "k": 15,
                                                   "set_at": "2026-12-04T00:00:00+00:00"})  # fmt: skip
            t = threading.Thread(target=second)
            t.start()
            t.join(1.0)
            assert t.is_alive()  # waits for the first transaction's row
        t.join(30.0)
        assert not t.is_alive() and not errors, errors
        assert reg.threshold.value == 0.25 and other.threshold.value == 0.25
    finally:
        other.close()
