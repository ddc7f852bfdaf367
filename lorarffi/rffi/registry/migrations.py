"""Schema migrations: one function per version step, run in order inside one transaction when a registry
written by older code is opened.

Versions:

1. ``meta``, ``devices`` (without ``carrier_hz``), ``embeddings``, ``audit``.
2. ``devices.carrier_hz``: the carrier a device was enrolled on, in Hz (NULL for devices enrolled before).
3. ``audit.packet_key`` and its unique index: the packet a decision is about, written once (NULL before).
4. ``devices.iq_*``: the enrollment IQ image and carrier leakage statistics (NULL for devices enrolled before:
   the IQ gate passes their packets until they are enrolled again).
5. ``devices.iq_fit``: the fit that measured a device's IQ statistics. Those of version 4 were measured by
   the one-step fit (``iq_fit_name(0)``), which leaves a frequency-selective channel's shape in them: they
   are kept under its name, and the IQ gate, which compares a packet only with statistics of the fit that
   measured it, passes those devices until they are enrolled again.

A registry whose version is newer than :data:`~.schema.SCHEMA_VERSION` is refused by the caller; nothing here
downgrades.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import Connection, Table, text, update

from lorarffi.dsp.impairment import iq_fit_name
from lorarffi.rffi.registry.schema import IQ_COLUMNS, SCHEMA_VERSION, audit, audit_packet_key, devices, meta

__all__ = ["MIGRATIONS", "migrate"]


def _add_column(conn: Connection, table: Table, name: str) -> None:
    column = table.c[name]
    quote = conn.dialect.identifier_preparer.quote
    conn.execute(
        text(
            f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} "
            f"{column.type.compile(dialect=conn.dialect)}"
        )
    )


def _v1_to_v2(conn: Connection) -> None:
    _add_column(conn, devices, "carrier_hz")


def _v2_to_v3(conn: Connection) -> None:
    _add_column(conn, audit, "packet_key")
    audit_packet_key.create(conn)


def _v3_to_v4(conn: Connection) -> None:
    for name in IQ_COLUMNS:
        _add_column(conn, devices, name)


def _v4_to_v5(conn: Connection) -> None:
    _add_column(conn, devices, "iq_fit")
    conn.execute(update(devices).where(devices.c.iq_image_re.is_not(None)).values(iq_fit=iq_fit_name(0)))


MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_v1_to_v2, _v2_to_v3, _v3_to_v4, _v4_to_v5)
"""``MIGRATIONS[i]`` takes a registry from version ``i + 1`` to ``i + 2``."""
assert len(MIGRATIONS) == SCHEMA_VERSION - 1, "one migration per version step"


def migrate(conn: Connection, version: int) -> int:
    """Bring a registry at schema ``version`` to :data:`SCHEMA_VERSION` inside the caller's transaction.

    Parameters
    ----------
    conn : sqlalchemy.Connection
        A connection inside a write transaction; the caller commits.
    version : int
        The registry's current schema version, 1 to :data:`SCHEMA_VERSION`.

    Returns
    -------
    int
        The number of steps run.
    """
    steps = MIGRATIONS[version - 1 :]
    for step in steps:
        step(conn)
    if steps:
        conn.execute(
            update(meta).where(meta.c.key == "schema_version").values(value=json.dumps(SCHEMA_VERSION))
        )
    return len(steps)
