"""The registry's tables, one SQLAlchemy Core schema for SQLite and server databases.

- ``meta``: key -> JSON value: ``format``, ``schema_version``, ``model_fingerprint``, ``embedding_dim``,
  ``model_info`` (the model's config summary), ``created_at``, ``threshold`` (value, FAR, method, k),
  ``packet_input`` (how enrolled packets were read: ``preamble``, ``whole_packets`` or ``mixed``).
- ``devices``: one row per enrolled device; ``id`` is the device id the operator gives; its CFO statistics
  and its enrollment packets' IQ image and carrier leakage (``iq_*``, the IQ gate's; NULL when not measured)
  with the name of the fit that measured them (``iq_fit``, :data:`~lorarffi.dsp.impairment.IQ_FIT`).
- ``embeddings``: the reference embeddings, one row per (device, row index), each a little-endian float32
  vector of ``embedding_dim`` values; deleting a device deletes its embeddings (``ON DELETE CASCADE``).
- ``audit``: the append-only decision log. ``device_id`` is not a foreign key: the log outlives devices.
  Triggers refuse UPDATE and DELETE of its rows (and TRUNCATE on PostgreSQL). ``packet_key`` names the packet
  a decision is about when the writer needs it written once (a scale-out worker: ``node/run/start_sample``);
  it is unique, NULL for rows without one.
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    event,
)

__all__ = [
    "SCHEMA_VERSION",
    "FORMAT",
    "EMBEDDING_DTYPE",
    "metadata",
    "meta",
    "devices",
    "embeddings",
    "audit",
    "audit_packet_key",
    "IQ_COLUMNS",
]

SCHEMA_VERSION = 5
"""The schema this code writes; older ones are migrated on open (:mod:`.migrations`)."""
FORMAT = "lora-rffi-registry"
"""``meta.format`` of every registry."""
EMBEDDING_DTYPE = "<f4"
"""How an embedding vector is stored: little-endian float32, whatever the host."""

IQ_COLUMNS = (
    "iq_image_re", "iq_image_im", "iq_image_std", "iq_leakage_re", "iq_leakage_im", "iq_leakage_std"
)
"""``devices`` columns of the enrollment IQ image and carrier leakage (:mod:`lorarffi.rffi.iq_gate`)."""

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", Text),
    Column("enrolled_at", DateTime(timezone=True), nullable=False),
    Column("n_packets", Integer, nullable=False),
    *(Column(f"cfo_{statistic}_hz", Float) for statistic in ("mean", "std", "min", "max")),
    Column("carrier_hz", Float),
    Column("notes", Text),
    *(Column(name, Float) for name in IQ_COLUMNS),
    Column("iq_fit", String(64)),
)

embeddings = Table(
    "embeddings",
    metadata,
    Column("device_id", Integer, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    Column("row_index", Integer, primary_key=True),
    Column("vector", LargeBinary, nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("time_utc", DateTime(timezone=True), nullable=False),
    Column("source", Text, nullable=False),
    Column("start_sample", BigInteger),
    Column("cfo_hz", Float),
    Column("snr_db", Float),
    Column("device_id", Integer),
    Column("score", Float),
    Column("verdict", String(32), nullable=False),
    Column("model_fingerprint", String(128), nullable=False),
    Column("packet_key", String(255)),
)
audit_packet_key = Index("audit_packet_key", audit.c.packet_key, unique=True)
"""At most one audit row per named packet (rows without a key are not constrained)."""

for _op in ("UPDATE", "DELETE"):
    event.listen(
        audit,
        "after_create",
        DDL(
            f"CREATE TRIGGER audit_append_only_{_op.lower()} BEFORE {_op} ON audit "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        ).execute_if(dialect="sqlite"),
    )
for _ddl in (
    "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
    "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
):
    event.listen(audit, "after_create", DDL(_ddl).execute_if(dialect="postgresql"))
