"""The registry's reads and writes as functions of an open connection; the caller owns the transaction.

Inputs are already checked (:mod:`.store` does that); these functions only move rows.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, case, delete, func, insert, select, update

from lorarffi.rffi.registry.records import AuditRow, DeviceRecord, as_utc
from lorarffi.rffi.registry.schema import EMBEDDING_DTYPE, audit, devices, embeddings, meta

__all__ = [
    "CfoMove",
    "read_meta",
    "write_meta",
    "merge_packet_input",
    "device_records",
    "embedding_matrix",
    "store_device",
    "insert_audit",
    "read_audit",
    "cfo_centres",
    "move_cfo_centres",
]


class CfoMove(NamedTuple):
    """How a batch's drift tracking moved one device's CFO centre and spread: from ``*_before_hz`` (the
    values it decided with) to ``*_after_hz``, Hz."""

    mean_before_hz: float
    std_before_hz: float
    mean_after_hz: float
    std_after_hz: float


LABELS = ("name", "notes")
"""Device fields a re-enrollment keeps when it gives None for them."""


def read_meta(conn: Connection) -> dict[str, Any]:
    """Every ``meta`` entry, JSON-decoded."""
    return {key: json.loads(value) for key, value in conn.execute(select(meta.c.key, meta.c.value))}


def merge_packet_input(conn: Connection, packet_input: str) -> str:
    """Note in ``meta.packet_input`` that packets read as ``packet_input`` were enrolled: the value stays
    while every enrollment was read one way, else becomes ``"mixed"``. Returns the stored value."""
    current = read_meta(conn).get("packet_input")
    merged = packet_input if current in (None, packet_input) else "mixed"
    if merged != current:
        write_meta(conn, "packet_input", merged)
    return merged


def write_meta(conn: Connection, key: str, value: Any) -> None:
    """Set ``meta[key]`` to ``value`` (JSON-encoded), replacing what was there: one upsert, so that two
    processes writing one key at once (workers starting together each store the threshold they chose) both
    succeed, the later one's value kept, where a delete and an insert would collide on the first's new row."""
    text = json.dumps(value)
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        from sqlalchemy.dialects import postgresql, sqlite

        upsert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(meta).values(
            key=key, value=text
        )
        conn.execute(upsert.on_conflict_do_update(index_elements=[meta.c.key], set_={"value": text}))
        return
    conn.execute(delete(meta).where(meta.c.key == key))
    conn.execute(insert(meta).values(key=key, value=text))


def device_records(conn: Connection, device_id: int | None = None) -> list[DeviceRecord]:
    """The enrolled devices in id order (only ``device_id`` when given), with their embedding counts."""
    counts = (
        select(embeddings.c.device_id, func.count().label("n")).group_by(embeddings.c.device_id).subquery()
    )
    query = (
        select(devices, func.coalesce(counts.c.n, 0).label("n_embeddings"))
        .outerjoin(counts, counts.c.device_id == devices.c.id)
        .order_by(devices.c.id)
    )
    if device_id is not None:
        query = query.where(devices.c.id == device_id)
    out = []
    for row in conn.execute(query).mappings():
        fields = dict(row)
        fields["device_id"] = fields.pop("id")
        fields["enrolled_at"] = as_utc(fields["enrolled_at"])
        out.append(DeviceRecord(**fields))
    return out


def embedding_matrix(conn: Connection, dim: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Every reference embedding in one query: device ids ``(M,)`` and vectors ``(M, dim)``, ordered by device
    id, then row index. The vectors are a read-only view of one buffer."""
    rows = conn.execute(
        select(embeddings.c.device_id, embeddings.c.vector).order_by(
            embeddings.c.device_id, embeddings.c.row_index
        )
    ).all()
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    ids, vectors = zip(*rows, strict=True)
    emb = np.frombuffer(b"".join(vectors), dtype=EMBEDDING_DTYPE).reshape(len(rows), dim)
    return np.array(ids, dtype=np.int64), emb.astype(np.float32, copy=False)


def store_device(conn: Connection, values: dict[str, Any], emb: npt.NDArray[np.float32]) -> None:
    """Insert or replace device ``values["id"]`` and all its embeddings (rows of ``emb``, stored as
    :data:`EMBEDDING_DTYPE`). On replacement, ``name`` and ``notes`` given as None keep their old values."""
    device_id = values["id"]
    conn.execute(delete(embeddings).where(embeddings.c.device_id == device_id))
    changed = {k: v for k, v in values.items() if k != "id" and not (k in LABELS and v is None)}
    if conn.execute(update(devices).where(devices.c.id == device_id).values(**changed)).rowcount == 0:
        conn.execute(insert(devices).values(**values))
    stored = np.ascontiguousarray(emb, dtype=EMBEDDING_DTYPE)
    conn.execute(
        insert(embeddings),
        [{"device_id": device_id, "row_index": i, "vector": v.tobytes()} for i, v in enumerate(stored)],
    )


def insert_audit(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Append audit rows (column name -> value); rows whose ``packet_key`` is already logged are skipped.
    Returns the number appended."""
    keyed = [r for r in rows if r.get("packet_key") is not None]
    plain = [r for r in rows if r.get("packet_key") is None]
    if plain:
        conn.execute(insert(audit), plain)
    if not keyed:
        return len(plain)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as keyed_insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as keyed_insert
    else:  # pragma: no cover - the registry runs on SQLite and PostgreSQL
        raise NotImplementedError(f"keyed audit rows on {conn.dialect.name}")
    stmt = keyed_insert(audit).on_conflict_do_nothing(index_elements=[audit.c.packet_key])
    appended = conn.execute(stmt.returning(audit.c.packet_key), keyed).all()
    return len(plain) + len(appended)


def read_audit(conn: Connection, limit: int | None = None) -> list[AuditRow]:
    """The audit log oldest first; with ``limit``, only its last ``limit`` rows."""
    query = select(audit).order_by(audit.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    rows = conn.execute(query).mappings().all()
    return [
        AuditRow(
            verdict=r["verdict"],
            device_id=r["device_id"],
            score=r["score"],
            source=r["source"],
            start_sample=r["start_sample"],
            cfo_hz=r["cfo_hz"],
            snr_db=r["snr_db"],
            time_utc=as_utc(r["time_utc"]),
            model_fingerprint=r["model_fingerprint"],
            audit_id=r["id"],
            packet_key=r["packet_key"],
        )
        for r in reversed(rows)
    ]


def cfo_centres(conn: Connection) -> dict[int, tuple[float, float]]:
    """Device id -> its stored ``(cfo_mean_hz, cfo_std_hz)``, Hz, of the devices with CFO statistics (one
    query of two columns: no embeddings)."""
    rows = conn.execute(
        select(devices.c.id, devices.c.cfo_mean_hz, devices.c.cfo_std_hz).where(
            devices.c.cfo_mean_hz.is_not(None), devices.c.cfo_std_hz.is_not(None)
        )
    )
    return {int(i): (float(m), float(s)) for i, m, s in rows}


def move_cfo_centres(conn: Connection, moves: dict[int, CfoMove], min_std_hz: float) -> None:
    """Move the stored ``cfo_mean_hz`` and ``cfo_std_hz`` of devices by what a batch moved them, each in one
    ``UPDATE`` evaluated on the row as it is when the statement runs (so concurrent writers add up).

    A column still holding the value the move was measured from is set to the move's end value (``stored +
    delta`` computed exactly, bit for bit what a single writer tracked); one another writer has moved since
    gets ``stored + delta`` (the spread floored at ``min_std_hz``). Devices no longer enrolled are skipped.
    The spread moves by its delta like the centre: both are moving averages of the packets a writer saw, so
    each writer's movement is its packets' evidence and the sum applies all of it; overwriting would keep one
    writer's and drop the others'. The floor keeps a sum of concurrent shrinkings a positive spread.
    """
    for device_id, mv in moves.items():
        mean, std = devices.c.cfo_mean_hz, devices.c.cfo_std_hz
        added_std = std + (mv.std_after_hz - mv.std_before_hz)
        conn.execute(
            update(devices)
            .where(devices.c.id == device_id)
            .values(
                cfo_mean_hz=case(
                    (mean == mv.mean_before_hz, mv.mean_after_hz),
                    else_=mean + (mv.mean_after_hz - mv.mean_before_hz),
                ),
                cfo_std_hz=case(
                    (std == mv.std_before_hz, mv.std_after_hz),
                    (added_std < min_std_hz, min_std_hz),
                    else_=added_std,
                ),
            )
        )
