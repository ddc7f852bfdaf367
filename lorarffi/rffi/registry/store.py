"""The device registry: enrolled devices, their reference embeddings, the operating threshold and the audit
log, in one database bound to the model the embeddings came from.

>>> reg = Registry.create("fleet.db", model_fingerprint=model_fingerprint("runs/model"),
...                       embedding_dim=512, model_info={"model": "tifs_extractor"})    # doctest: +SKIP
>>> reg.enroll_device(21, emb, name="meter 21", cfo_hz=cfo_hz)                          # doctest: +SKIP
>>> ids, ref = Registry.open("fleet.db", model_fingerprint=fp).reference_embeddings()  # doctest: +SKIP

Every enrollment of a device (its row and all its embeddings, replacing earlier ones) is one transaction, so
a crash leaves the device either fully enrolled or as it was. Inputs are checked here; a file that is not a
registry, a registry of another model or of a newer schema is refused with one line.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine, delete, inspect, update

from lorarffi.dsp.impairment import IQ_FIT, TxImpairments
from lorarffi.errors import ConfigError, InputDataError, ModelError
from lorarffi.rffi.iq_gate import iq_statistics
from lorarffi.rffi.registry import queries
from lorarffi.rffi.registry.engine import (
    WRITE,
    Location,
    database_errors,
    enable_wal,
    locate,
    make_engine,
)
from lorarffi.rffi.registry.migrations import migrate
from lorarffi.rffi.registry.records import (
    AuditRow,
    DeviceRecord,
    Threshold,
    as_utc,
    cfo_statistics,
    optional_float,
    utc_now,
)
from lorarffi.rffi.registry.schema import FORMAT, SCHEMA_VERSION, devices, metadata

if TYPE_CHECKING:
    from lorarffi.rffi.registry.portable import ImportSummary

__all__ = ["Registry", "model_fingerprint", "MIN_CFO_STD_HZ", "PACKET_INPUTS"]

PACKET_INPUTS = ("preamble", "whole_packets")
"""How enrolled packets can be read: each one's preamble alone, or its whole packet (``--whole-packets``)."""

MIN_CFO_STD_HZ = 1.0
"""Floor of a stored CFO spread moved by drift tracking, Hz. Each process measures its spread movement from
the value it read, so two shrinking the same device at once can add up past zero, which no standard
deviation can be; the floor keeps it positive. It lies far below the scatter of a LoRa CFO estimate (tens of
Hz) and the gate's margin (kHz), so it binds only on such an overshoot, never on one writer's movement."""

_MAX_DEVICE_ID = 2**31 - 1  # the largest id a 32-bit INTEGER column holds on every database


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """The identity a registry binds to: ``"sha256:<hex>"`` of the model directory's weights file, as its
    ``config.json`` records it (``weights_sha256``).

    Raises
    ------
    ModelError
        ``model_dir`` is not a model directory or its config records no weights hash.
    """
    from lorarffi.rffi.checkpoint import CONFIG_FILE, read_config

    read_config(model_dir)  # a model directory, readable and of a format this code knows
    sha = json.loads((pathlib.Path(model_dir) / CONFIG_FILE).read_text()).get("weights_sha256")
    if not isinstance(sha, str) or not sha:
        raise ModelError(f"{model_dir}: {CONFIG_FILE} records no weights_sha256; save the model again")
    return f"sha256:{sha}"


class Registry:
    """A device registry. Make one with :meth:`create`, open one with :meth:`open`; close it (or use it as a
    context manager) to release its connections.

    Parameters are positional-or-keyword where they are data, keyword-only where they are options. Device ids
    are integers 0 to 2**31 - 1. The registry is safe to share between processes; one instance is not meant
    to be shared between threads.
    """

    audit_keys: bool = False
    """When True, an audit row with a start sample and no ``packet_key`` is keyed ``SOURCE/START_SAMPLE``, so
    the same packet's decision is logged once however often it is written (scale-out workers set it, with
    ``NODE/RUN`` as the source)."""

    def __init__(self, engine: Engine, location: Location, meta: dict[str, Any]) -> None:
        self._engine = engine
        self._location = location
        self._meta = meta

    # -- lifecycle ---------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path_or_url: str | os.PathLike,
        *,
        model_fingerprint: str,
        embedding_dim: int,
        model_info: dict[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> Registry:
        """Create an empty registry for one model (or, with ``exist_ok``, open the one there).

        Parameters
        ----------
        path_or_url : str or path-like
            An SQLite file to create (a plain path) or a database URL.
        model_fingerprint : str
            The model's identity (:func:`model_fingerprint`); opening with another is refused.
        embedding_dim : int
            Length of every reference embedding.
        model_info : dict, optional
            A JSON-ready summary of the model (name, objective, representation, ...), kept for people.
        exist_ok : bool
            When the registry exists, :meth:`open` it instead, refusing it when it belongs to another model
            or holds embeddings of another length.

        Raises
        ------
        InputDataError
            The file already exists (or the database already holds a registry), or cannot be written.
        ModelError
            ``exist_ok`` and the existing registry is of another model or embedding length.
        """
        if not isinstance(model_fingerprint, str) or not model_fingerprint:
            raise ConfigError(f"model_fingerprint={model_fingerprint!r} must be a non-empty string")
        embedding_dim = _count(embedding_dim, "embedding_dim")
        if exist_ok and cls.exists(path_or_url):
            return cls._open_for(path_or_url, model_fingerprint, embedding_dim)
        location = locate(path_or_url)
        if location.path is not None:
            if location.path.exists():
                raise InputDataError(location.label, "already exists; open it, or give a new path")
            if not location.path.parent.is_dir():
                raise InputDataError(location.label, f"no such directory: {location.path.parent}")
        engine = make_engine(location)
        try:
            enable_wal(engine, location.label)  # creates the SQLite file
            values = {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "model_fingerprint": model_fingerprint,
                "embedding_dim": embedding_dim,
                "model_info": json.loads(json.dumps(model_info or {})),
                "created_at": utc_now().isoformat(),
            }
            with database_errors(location.label, "cannot create registry"), _write(engine) as conn:
                if inspect(conn).has_table("meta"):
                    raise InputDataError(location.label, "already holds a table 'meta'; give a new database")
                metadata.create_all(conn)
                for key, value in values.items():
                    queries.write_meta(conn, key, value)
        except BaseException:
            engine.dispose()
            if location.path is not None:  # leave no half-made registry behind
                for suffix in ("", "-wal", "-shm"):
                    pathlib.Path(f"{location.path}{suffix}").unlink(missing_ok=True)
            raise
        return cls(engine, location, values)

    @classmethod
    def open(cls, path_or_url: str | os.PathLike, *, model_fingerprint: str | None = None) -> Registry:
        """Open an existing registry, migrating an older schema.

        Parameters
        ----------
        path_or_url : str or path-like
            The registry's SQLite file (a plain path) or database URL.
        model_fingerprint : str, optional
            The model about to use it; a registry enrolled with another model is refused.

        Raises
        ------
        InputDataError
            No such file, not a lora-rffi registry, damaged, or of a schema newer than this code.
        ModelError
            The registry was enrolled with a model other than ``model_fingerprint``.
        """
        location = locate(path_or_url)
        if location.path is not None and not location.path.is_file():
            raise InputDataError(location.label, "no such registry file")
        engine = make_engine(location)
        try:
            meta = _checked_meta(engine, location.label)
            if meta["schema_version"] < SCHEMA_VERSION:
                with database_errors(location.label, "cannot migrate registry"), _write(engine) as conn:
                    meta = queries.read_meta(conn)  # another process may have migrated it meanwhile
                    migrate(conn, meta["schema_version"])
                    meta["schema_version"] = SCHEMA_VERSION
            enable_wal(engine, location.label)
        except BaseException:
            engine.dispose()
            raise
        registry = cls(engine, location, meta)
        if model_fingerprint is not None and model_fingerprint != registry.model_fingerprint:
            registry.close()
            raise ModelError(
                f"{location.label}: registry was enrolled with model {registry.model_fingerprint}, not "
                f"{model_fingerprint}; use that model, or enroll the devices again into a new registry"
            )
        return registry

    @classmethod
    def exists(cls, path_or_url: str | os.PathLike) -> bool:
        """Whether ``path_or_url`` names something to open: an existing SQLite file, or a database holding a
        ``meta`` table. (Whether it is a valid registry is :meth:`open`'s question.)"""
        location = locate(path_or_url)
        if location.path is not None:
            return location.path.exists()
        engine = make_engine(location)
        try:
            with database_errors(location.label), engine.connect() as conn:
                return inspect(conn).has_table("meta")
        finally:
            engine.dispose()

    @classmethod
    def _open_for(
        cls, path_or_url: str | os.PathLike, model_fingerprint: str, embedding_dim: int
    ) -> Registry:
        registry = cls.open(path_or_url, model_fingerprint=model_fingerprint)
        if registry.embedding_dim != embedding_dim:
            registry.close()
            raise ModelError(
                f"{registry.label}: registry holds {registry.embedding_dim}-d embeddings, the model makes "
                f"{embedding_dim}-d ones"
            )
        return registry

    def close(self) -> None:
        """Release the registry's connections (SQLite: folds the WAL back into the file)."""
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({self.label!r}, model={self.model_fingerprint!r})"

    # -- what the registry is ----------------------------------------------------------------------
    @property
    def label(self) -> str:
        """The registry's path, or its URL without password, as messages name it."""
        return self._location.label

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tools and tests; the methods below are the interface)."""
        return self._engine

    @property
    def model_fingerprint(self) -> str:
        """Identity of the model the registry's embeddings came from."""
        return self._meta["model_fingerprint"]

    @property
    def embedding_dim(self) -> int:
        """Length of every reference embedding."""
        return int(self._meta["embedding_dim"])

    @property
    def model_info(self) -> dict[str, Any]:
        """The model summary given at creation."""
        return dict(self._meta.get("model_info") or {})

    @property
    def created_at(self) -> datetime:
        """When the registry was created, aware, UTC."""
        return as_utc(datetime.fromisoformat(self._meta["created_at"]))

    @property
    def schema_version(self) -> int:
        """The schema version (always the current one once open)."""
        return int(self._meta["schema_version"])

    # -- devices -----------------------------------------------------------------------------------
    def enroll_device(
        self,
        device_id: int,
        embeddings: npt.ArrayLike,
        *,
        name: str | None = None,
        cfo_hz: npt.ArrayLike | None = None,
        carrier_hz: float | None = None,
        notes: str | None = None,
        n_packets: int | None = None,
        iq: TxImpairments | None = None,
    ) -> DeviceRecord:
        """Enroll a device, or enroll it again, in one transaction.

        Enrolling again replaces the device's embeddings and statistics; a ``name`` or ``notes`` given as None
        keeps the device's own.

        Parameters
        ----------
        device_id : int
            The device's id, 0 to 2**31 - 1.
        embeddings : array_like of float, shape (N, D)
            Its reference embeddings, N >= 1, D = :attr:`embedding_dim`; stored as float32.
        name : str, optional
            A label for people.
        cfo_hz : array_like of float, shape (P,), optional
            CFO of its enrollment packets, in Hz (gives the CFO statistics; None: unknown).
        carrier_hz : float, optional
            Carrier frequency it was enrolled on, in Hz.
        notes : str, optional
            Free text.
        n_packets : int, optional
            Packets the enrollment used; default N.
        iq : TxImpairments, optional
            IQ image and carrier leakage of its enrollment packets
            (:func:`~lorarffi.dsp.impairment.tx_impairments`): the IQ gate's statistics (None: not measured).

        Returns
        -------
        DeviceRecord
            The device as stored.
        """
        device_id = _device_id(device_id)
        emb = self._checked_embeddings(embeddings)
        n_packets = emb.shape[0] if n_packets is None else _count(n_packets, "n_packets")
        values = {
            "id": device_id,
            "name": _optional_text(name, "name"),
            "enrolled_at": utc_now(),
            "n_packets": n_packets,
            **asdict(cfo_statistics(cfo_hz)),
            "carrier_hz": optional_float(carrier_hz, "carrier_hz"),
            "notes": _optional_text(notes, "notes"),
            **asdict(stats := iq_statistics(iq)),
            "iq_fit": IQ_FIT if stats.iq_image_re is not None else None,
        }
        with self._write() as conn:
            queries.store_device(conn, values, emb)
            return queries.device_records(conn, device_id)[0]

    def devices(self) -> list[DeviceRecord]:
        """Every enrolled device, in id order."""
        with self._read() as conn:
            return queries.device_records(conn)

    def device(self, device_id: int) -> DeviceRecord:
        """The enrolled device ``device_id``; :class:`ConfigError` when there is none."""
        device_id = _device_id(device_id)
        with self._read() as conn:
            return self._one(conn, device_id)

    def remove(self, device_id: int) -> DeviceRecord:
        """Remove a device and its embeddings (its audit rows stay); returns what was removed."""
        device_id = _device_id(device_id)
        with self._write() as conn:
            record = self._one(conn, device_id)
            conn.execute(delete(devices).where(devices.c.id == device_id))
        return record

    def rename(self, device_id: int, name: str | None) -> DeviceRecord:
        """Give device ``device_id`` a new name (None clears it); returns the updated device."""
        device_id = _device_id(device_id)
        name = _optional_text(name, "name")
        with self._write() as conn:
            self._one(conn, device_id)
            conn.execute(update(devices).where(devices.c.id == device_id).values(name=name))
            return self._one(conn, device_id)

    def reference_embeddings(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Every reference embedding, read in one query.

        Returns
        -------
        device_ids : ndarray of int64, shape (M,)
            The device of each embedding, ascending.
        embeddings : ndarray of float32, shape (M, D)
            The embeddings as enrolled (bit for bit), a read-only array; within a device in enrollment order.
        """
        with self._read() as conn:
            return queries.embedding_matrix(conn, self.embedding_dim)

    # -- the operating threshold -------------------------------------------------------------------
    @property
    def packet_input(self) -> str | None:
        """How the enrolled packets were read: ``"preamble"``, ``"whole_packets"`` or ``"mixed"`` (None: not
        recorded, a registry enrolled before this was kept)."""
        with self._read() as conn:
            value = queries.read_meta(conn).get("packet_input")
        return None if value is None else str(value)

    def record_packet_input(self, packet_input: str) -> str:
        """Note how packets just enrolled were read (:data:`PACKET_INPUTS`); returns the registry's record
        (``"mixed"`` once both kinds are enrolled)."""
        if packet_input not in PACKET_INPUTS:
            raise ConfigError(f"packet_input={packet_input!r} is not valid: use one of {PACKET_INPUTS}")
        with self._write() as conn:
            return queries.merge_packet_input(conn, packet_input)

    def set_threshold(
        self, value: float, *, far: float, method: str, k: int | None = None, score: str | None = None
    ) -> Threshold:
        """Store the authenticator's operating threshold and how it was chosen.

        Parameters
        ----------
        value : float
            The score threshold.
        far : float
            False-accept rate it was chosen for, 0 < far < 1.
        method : str
            How it was chosen, in words (e.g. ``"leave-one-out enrollment packets"``).
        k : int, optional
            Neighbours of the K-NN score it applies to.
        score : str, optional
            The score it applies to (:data:`lorarffi.rffi.knn.SCORES`).
        """
        v = optional_float(value, "threshold")
        if v is None:
            raise ConfigError(f"threshold={value!r} must be a finite number")
        far_f = optional_float(far, "far")
        if far_f is None or not 0.0 < far_f < 1.0:
            raise ConfigError(f"far={far!r} must be between 0 and 1 (exclusive)")
        if not isinstance(method, str) or not method.strip():
            raise ConfigError(f"method={method!r} must say in words how the threshold was chosen")
        if score is not None and (not isinstance(score, str) or not score.strip()):
            raise ConfigError(f"score={score!r} must name the score the threshold applies to")
        threshold = Threshold(v, far_f, method, None if k is None else _count(k, "k"), utc_now(), score)
        with self._write() as conn:
            queries.write_meta(conn, "threshold", threshold.to_dict())
        return threshold

    @property
    def threshold(self) -> Threshold | None:
        """The stored operating threshold (read from the database each time), None until one is set."""
        with self._read() as conn:
            d = queries.read_meta(conn).get("threshold")
        return None if d is None else Threshold.from_dict(d)

    # -- the audit log -----------------------------------------------------------------------------
    def append_audit(self, rows: Sequence[AuditRow]) -> int:
        """Append decisions to the audit log in one transaction; returns the number appended.

        ``time_utc`` left None is the time of this call; ``model_fingerprint`` left None is the registry's.
        NaN CFO, SNR or score are stored as unknown (NULL). A row whose ``packet_key`` is already in the log
        is skipped (not counted), so a batch written again after a crash is logged once.
        """
        now = utc_now()
        values = [self._audit_values(r, now) for r in rows]
        if not values:
            return 0
        with self._write() as conn:
            return queries.insert_audit(conn, values)

    def audit(self, limit: int | None = None) -> list[AuditRow]:
        """The audit log, oldest first; with ``limit``, its last ``limit`` rows."""
        if limit is not None:
            limit = _count(limit, "limit", minimum=0)
        with self._read() as conn:
            return queries.read_audit(conn, limit)

    def record_decisions(
        self, rows: Sequence[AuditRow], *, cfo_tracked: Mapping[int, Sequence[float]] | None = None
    ) -> None:
        """Append decisions to the audit log and move devices' CFO statistics by drift tracking, in one
        transaction (:meth:`append_audit` for the rows).

        Parameters
        ----------
        rows : sequence of AuditRow
        cfo_tracked : mapping of int to CfoMove, optional
            Device id -> how the batch moved its CFO centre and spread, Hz
            (:class:`~lorarffi.rffi.registry.queries.CfoMove`: ``(mean_before_hz, std_before_hz,
            mean_after_hz, std_after_hz)``). The stored ``cfo_mean_hz`` and ``cfo_std_hz`` move by the
            difference, in SQL on the row as stored when the transaction writes it, so several processes
            sharing the registry add their movements up instead of overwriting each other's; with one writer
            the stored values become exactly the ``*_after_hz`` ones. The spread's sum is floored at
            :data:`MIN_CFO_STD_HZ`. The enrollment range ``cfo_min_hz``..``cfo_max_hz`` stays, so the CFO
            gate's window keeps covering it. Devices no longer enrolled are skipped.
        """
        now = utc_now()
        values = [self._audit_values(r, now) for r in rows]
        moves = {
            _device_id(d): queries.CfoMove(*(_finite(x, f"tracked CFO {name}") for x, name in
                                             zip(mv, queries.CfoMove._fields, strict=True)))
            for d, mv in (cfo_tracked or {}).items()
        }  # fmt: skip
        if not values and not moves:
            return
        with self._write() as conn:
            if values:
                queries.insert_audit(conn, values)
            queries.move_cfo_centres(conn, moves, MIN_CFO_STD_HZ)

    def cfo_centres(self) -> dict[int, tuple[float, float]]:
        """Device id -> its stored CFO centre and spread ``(cfo_mean_hz, cfo_std_hz)``, Hz, of every device
        enrolled with CFO statistics: what drift tracking has made of them so far, read in one light query
        (no embeddings)."""
        with self._read() as conn:
            return queries.cfo_centres(conn)

    # -- portable files ----------------------------------------------------------------------------
    def export(self, path: str | os.PathLike) -> pathlib.Path:
        """Write the registry to a portable file (see :func:`~.portable.export_registry`)."""
        from lorarffi.rffi.registry.portable import export_registry

        return export_registry(self, path)

    @staticmethod
    def import_(path: str | os.PathLike, path_or_url: str | os.PathLike, **kwargs: Any) -> ImportSummary:
        """Read a portable file into a registry (see :func:`~.portable.import_registry`)."""
        from lorarffi.rffi.registry.portable import import_registry

        return import_registry(path, path_or_url, **kwargs)

    # -- internals ---------------------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with database_errors(self.label), self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with database_errors(self.label), _write(self._engine) as conn:
            yield conn

    def _one(self, conn: Connection, device_id: int) -> DeviceRecord:
        found = queries.device_records(conn, device_id)
        if not found:
            raise ConfigError(f"device {device_id} is not enrolled in {self.label}")
        return found[0]

    def _checked_embeddings(self, embeddings: npt.ArrayLike) -> npt.NDArray[np.float32]:
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] < 1 or emb.shape[1] != self.embedding_dim:
            raise ConfigError(
                f"embeddings have shape {emb.shape}, expected (N, {self.embedding_dim}) with N >= 1"
            )
        if not np.issubdtype(emb.dtype, np.floating):
            raise ConfigError(f"embeddings have dtype {emb.dtype}, expected float32")
        if not np.all(np.isfinite(emb)):
            raise ConfigError("embeddings hold non-finite values")
        return emb.astype(np.float32, copy=False)

    def _audit_values(self, row: AuditRow, now: datetime) -> dict[str, Any]:
        if not isinstance(row, AuditRow):
            raise ConfigError(f"audit rows must be AuditRow, got {type(row).__name__}")
        if not isinstance(row.verdict, str) or not row.verdict:
            raise ConfigError(f"verdict={row.verdict!r} must be a non-empty string")
        return {
            "time_utc": now if row.time_utc is None else as_utc(row.time_utc),
            "source": str(row.source),
            "start_sample": None if row.start_sample is None else int(row.start_sample),
            "cfo_hz": optional_float(row.cfo_hz, "cfo_hz"),
            "snr_db": optional_float(row.snr_db, "snr_db"),
            "device_id": None if row.device_id is None else _device_id(row.device_id),
            "score": optional_float(row.score, "score"),
            "verdict": row.verdict,
            "model_fingerprint": row.model_fingerprint or self.model_fingerprint,
            "packet_key": _optional_text(row.packet_key, "packet_key")
            or (
                f"{row.source}/{int(row.start_sample)}"
                if self.audit_keys and row.start_sample is not None
                else None
            ),  # fmt: skip
        }


@contextmanager
def _write(engine: Engine) -> Iterator[Connection]:
    """A connection inside a write transaction (SQLite: ``BEGIN IMMEDIATE``), committed on success."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE: True})
        with conn.begin():
            yield conn


def _checked_meta(engine: Engine, label: str) -> dict[str, Any]:
    """The ``meta`` entries of a database that must be a lora-rffi registry this code can read."""
    with database_errors(label, "not a readable lora-rffi registry"), engine.connect() as conn:
        if not inspect(conn).has_table("meta"):
            raise InputDataError(label, "not a lora-rffi registry (no 'meta' table)")
        try:
            meta = queries.read_meta(conn)
        except (ValueError, TypeError) as exc:
            raise InputDataError(
                label, f"not a lora-rffi registry (unreadable 'meta' table: {exc})"
            ) from None
    if meta.get("format") != FORMAT:
        raise InputDataError(label, f"not a lora-rffi registry (format {meta.get('format')!r})")
    version = meta.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise InputDataError(label, f"registry has no valid schema version ({version!r})")
    if version > SCHEMA_VERSION:
        raise InputDataError(
            label,
            f"registry schema version {version} is newer than this software reads ({SCHEMA_VERSION}); "
            "upgrade lora-rffi",
        )
    for key in ("model_fingerprint", "embedding_dim", "created_at"):
        if key not in meta:
            raise InputDataError(label, f"registry is damaged: its meta table has no {key!r}")
    return meta


def _device_id(device_id: Any) -> int:
    if isinstance(device_id, bool) or not isinstance(device_id, (int, np.integer)):
        raise ConfigError(f"device_id={device_id!r} must be an integer")
    if not 0 <= int(device_id) <= _MAX_DEVICE_ID:
        raise ConfigError(f"device_id={device_id} must be between 0 and {_MAX_DEVICE_ID}")
    return int(device_id)


def _finite(x: Any, name: str) -> float:
    v = optional_float(x, name)
    if v is None:
        raise ConfigError(f"{name}={x!r} must be a finite number")
    return v


def _count(n: Any, name: str, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise ConfigError(f"{name}={n!r} must be an integer >= {minimum}")
    return int(n)


def _optional_text(text: Any, name: str) -> str | None:
    if text is not None and not isinstance(text, str):
        raise ConfigError(f"{name}={text!r} must be a string")
    return text
