"""Where a registry lives and how it is connected to: a plain path is an SQLite file, anything with ``://`` a
database URL (``sqlite:///...``, ``postgresql://...``).

``postgresql://`` connects through psycopg 3 (libpq). Its password comes from the URL, or better from the
environment (``PGPASSWORD``) or a password file (``PGPASSFILE``, default ``~/.pgpass``), as libpq reads them;
libpq options in the query string pass through (``?sslmode=verify-full&sslrootcert=ca.pem`` for TLS). Messages
and JSON name a registry by its URL with the password masked (:attr:`Location.label`).

On SQLite every connection turns foreign keys on and waits up to :data:`BUSY_TIMEOUT_MS` for a lock; the
driver's own transaction handling is switched off and transactions start with ``BEGIN`` (reads) or
``BEGIN IMMEDIATE`` (writes, see :data:`WRITE`), so a writer takes the lock before its first read and two
processes never deadlock upgrading a read to a write. Registries use the WAL journal (:func:`enable_wal`).
Database failures become one-line :class:`~lorarffi.errors.InputDataError` (:func:`database_errors`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

from lorarffi.errors import ConfigError, InputDataError

__all__ = [
    "Location",
    "locate",
    "make_engine",
    "enable_wal",
    "database_errors",
    "redact_url",
    "BUSY_TIMEOUT_MS",
    "WRITE",
]

BUSY_TIMEOUT_MS = 30_000
"""How long an SQLite connection waits for another process's write lock, in ms."""
WRITE = "lorarffi_write"
"""Execution option marking a connection whose transactions write (SQLite: ``BEGIN IMMEDIATE``)."""
DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}
"""The driver a URL without one gets (SQLAlchemy's own default for PostgreSQL, psycopg2, is not installed)."""


@dataclass(frozen=True)
class Location:
    """A registry's address.

    Attributes
    ----------
    url : sqlalchemy.URL
        What the engine connects to.
    label : str
        How messages name it (the path as given, or the URL without its password).
    path : Path or None
        The SQLite file; None for a server or an in-memory database.
    """

    url: URL
    label: str
    path: Path | None


def locate(path_or_url: str | os.PathLike) -> Location:
    """The :class:`Location` of a registry given as a file path or a database URL."""
    text = os.fspath(path_or_url)
    if "://" not in text:
        return Location(URL.create("sqlite", database=text), text, Path(text))
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise ConfigError(f"registry URL {text!r} is not a valid database URL: {exc}") from None
    label = url.render_as_string(hide_password=True)
    if url.drivername in DRIVERS:
        url = url.set(drivername=DRIVERS[url.drivername])
    path = None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database)
    return Location(url, label, path)


def redact_url(text: str) -> str:
    """``text`` with the password of a ``scheme://user:password@host`` URL replaced by ``***`` (for logs).

    Examples
    --------
    >>> redact_url("postgresql://app:hunter2@db:5432/reg?sslmode=require")
    'postgresql://app:***@db:5432/reg?sslmode=require'
    >>> redact_url("redis://:hunter2@10.0.0.5:6379/lora"), redact_url("fleet.db")
    ('redis://:***@10.0.0.5:6379/lora', 'fleet.db')
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    authority, slash, tail = rest.partition("/")
    credentials, at, host = authority.rpartition("@")
    if not at or ":" not in credentials:
        return text
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{tail}"


def make_engine(location: Location) -> Engine:
    """An engine for ``location``; SQLite connections are set up as the module docstring says."""
    try:
        engine = create_engine(location.url)
    except ImportError as exc:
        raise InputDataError(location.label, f"no database driver for this URL ({exc})") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection, _connection_record) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun by _sqlite_begin, not the driver
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


def enable_wal(engine: Engine, label: str) -> None:
    """Switch an SQLite registry to the WAL journal (kept in the file; a no-op on other databases)."""
    if engine.dialect.name != "sqlite":
        return
    with database_errors(label):
        raw = engine.raw_connection()
    try:
        raw.driver_connection.execute("PRAGMA journal_mode = WAL")
    except engine.dialect.loaded_dbapi.Error as exc:
        raise InputDataError(label, f"cannot switch to the WAL journal: {exc}") from None
    finally:
        raw.close()


@contextmanager
def database_errors(label: str, what: str = "database error") -> Iterator[None]:
    """Turn a database failure inside the block into ``InputDataError(label, "{what}: {driver message}")``.

    Integrity errors (a broken constraint) are left alone: they are bugs, not the user's input.
    """
    try:
        yield
    except IntegrityError:
        raise
    except DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()
        raise InputDataError(label, f"{what}: {detail[0] if detail else type(exc.orig).__name__}") from None
