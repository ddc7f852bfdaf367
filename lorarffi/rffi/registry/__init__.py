"""The device registry: enrolled devices, their reference embeddings, the operating threshold and an
append-only audit log of decisions, in one SQLite file (default) or a server database, bound to the model
that made the embeddings.

- :mod:`.store`: :class:`Registry` (create, open, enroll, query, threshold, audit), :func:`model_fingerprint`.
- :mod:`.records`: the typed rows (:class:`DeviceRecord`, :class:`AuditRow`, :class:`Threshold`).
- :mod:`.schema`, :mod:`.migrations`: the tables (SQLAlchemy Core) and the version steps.
- :mod:`.engine`: paths and URLs -> engines; SQLite set up for WAL, foreign keys, concurrent processes.
- :mod:`.queries`: reads and writes inside the caller's transaction.
- :mod:`.portable`: the portable export file (zip: JSON manifest + ``.npy``, checksummed).
"""

from lorarffi.rffi.registry.portable import ImportSummary, export_registry, import_registry
from lorarffi.rffi.registry.records import AuditRow, DeviceRecord, Threshold
from lorarffi.rffi.registry.schema import SCHEMA_VERSION
from lorarffi.rffi.registry.store import PACKET_INPUTS, Registry, model_fingerprint

__all__ = [
    "Registry",
    "model_fingerprint",
    "DeviceRecord",
    "AuditRow",
    "Threshold",
    "ImportSummary",
    "export_registry",
    "import_registry",
    "SCHEMA_VERSION",
    "PACKET_INPUTS",
]
