"""Portable registry files: one zip an operator moves between sites.

The zip holds ``embeddings.npy`` (every reference embedding, float32 little-endian, shape (M, D), devices in
the manifest's order, each device's rows in enrollment order) and ``manifest.json``::

    {"format": "lora-rffi-registry-export", "format_version": 1, "software_version": "...",
     "exported_at": "...", "registry": {model_fingerprint, embedding_dim, model_info, created_at, threshold,
     packet_input},
     "devices": [{device_id, name, enrolled_at, n_packets, n_embeddings, cfo_*_hz, carrier_hz, notes,
                  iq_* (absent in exports of registries before schema 4), iq_fit (before schema 5)}, ...],
     "embeddings": {"file": "embeddings.npy", "shape": [M, D], "dtype": "<f4", "sha256": "<hex>"},
     "content_sha256": "<hex>"}

A device's ``iq_fit`` names the fit that measured its IQ statistics; exports made before it was kept carry
statistics of the one-step fit and are imported under that name (the IQ gate leaves them out).

``content_sha256`` is the SHA-256 of the manifest without it (canonical JSON: sorted keys, no spaces), so
an edited manifest or embeddings file is refused on import. The audit log stays at its site. The file is
written under a temporary name and renamed, so a reader never sees half of it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pathlib
import zipfile
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from lorarffi import __version__
from lorarffi.datasets.atomic import atomic_path
from lorarffi.dsp.impairment import iq_fit_name
from lorarffi.errors import InputDataError, ModelError
from lorarffi.rffi.registry import queries
from lorarffi.rffi.registry.records import as_utc, utc_now
from lorarffi.rffi.registry.schema import EMBEDDING_DTYPE, IQ_COLUMNS
from lorarffi.rffi.registry.store import Registry

__all__ = ["export_registry", "import_registry", "ImportSummary", "EXPORT_FORMAT"]

log = logging.getLogger(__name__)

EXPORT_FORMAT = "lora-rffi-registry-export"
EXPORT_VERSION = 1
_MANIFEST = "manifest.json"
_EMBEDDINGS = "embeddings.npy"
_CHUNK_BYTES = 1 << 20
_DEVICE_COLUMNS = (
    "name",
    "n_packets",
    "cfo_mean_hz",
    "cfo_std_hz",
    "cfo_min_hz",
    "cfo_max_hz",
    "carrier_hz",
    "notes",
)


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_registry` did.

    Attributes
    ----------
    registry : str
        The registry imported into (its label).
    device_ids : tuple of int
        The devices imported (new ones, or ones enrolled again).
    n_embeddings : int
        Reference embeddings imported.
    created : bool
        Whether the registry was created by the import (else the devices were merged into it).
    """

    registry: str
    device_ids: tuple[int, ...]
    n_embeddings: int
    created: bool


def export_registry(registry: Registry, path: str | os.PathLike) -> pathlib.Path:
    """Write ``registry``'s devices, embeddings and threshold to the portable file ``path`` (replaced).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    out = pathlib.Path(path)
    with registry._read() as conn:  # one snapshot: devices and embeddings agree
        records = queries.device_records(conn)
        meta = queries.read_meta(conn)
        threshold, packet_input = meta.get("threshold"), meta.get("packet_input")
        _, emb = queries.embedding_matrix(conn, registry.embedding_dim)
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(emb, dtype=EMBEDDING_DTYPE), allow_pickle=False)
    npy = buffer.getvalue()
    body = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "software_version": __version__,
        "exported_at": utc_now().isoformat(),
        "registry": {
            "model_fingerprint": registry.model_fingerprint,
            "embedding_dim": registry.embedding_dim,
            "model_info": registry.model_info,
            "created_at": registry.created_at.isoformat(),
            "threshold": threshold,
            "packet_input": packet_input,
        },
        "devices": [r.to_dict() for r in records],
        "embeddings": {
            "file": _EMBEDDINGS,
            "shape": list(emb.shape),
            "dtype": EMBEDDING_DTYPE,
            "sha256": hashlib.sha256(npy).hexdigest(),
        },
    }
    manifest = {**body, "content_sha256": _content_sha256(body)}
    try:
        with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w") as zf:
            zf.writestr(_MANIFEST, json.dumps(manifest, indent=1), compress_type=zipfile.ZIP_DEFLATED)
            zf.writestr(_EMBEDDINGS, npy, compress_type=zipfile.ZIP_STORED)
    except OSError as exc:
        raise InputDataError(out, f"cannot write the registry export: {exc.strerror or exc}") from None
    return out


def import_registry(
    path: str | os.PathLike, path_or_url: str | os.PathLike, *, model_fingerprint: str | None = None
) -> ImportSummary:
    """Read a portable file into a registry: a new one (threshold included), or an existing one of the same
    model, whose devices of the same ids are enrolled again (its threshold is kept; choose it again).

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`export_registry`.
    path_or_url : str or path-like
        The registry to import into (created when it does not exist).
    model_fingerprint : str, optional
        The model the caller will use; a file of another model is refused.

    Raises
    ------
    InputDataError
        The file is not a registry export, or it was edited or damaged (checksums differ).
    ModelError
        The file's model differs from ``model_fingerprint`` or from the existing registry's model.
    """
    manifest, emb = _read_export(pathlib.Path(path))
    reg_meta = manifest["registry"]
    if model_fingerprint is not None and model_fingerprint != reg_meta["model_fingerprint"]:
        raise ModelError(
            f"{path}: export was enrolled with model {reg_meta['model_fingerprint']}, not {model_fingerprint}"
        )
    created = not Registry.exists(path_or_url)
    registry = Registry.create(
        path_or_url,
        model_fingerprint=reg_meta["model_fingerprint"],
        embedding_dim=reg_meta["embedding_dim"],
        model_info=reg_meta["model_info"],
        exist_ok=True,
    )
    with registry:
        offsets = np.cumsum([0] + [d["n_embeddings"] for d in manifest["devices"]])
        with registry._write() as conn:
            for d, lo, hi in zip(manifest["devices"], offsets[:-1], offsets[1:], strict=True):
                queries.store_device(conn, _device_values(path, d), emb[lo:hi])
            imported_input = reg_meta.get("packet_input")  # absent from exports made before it was kept
            if imported_input is not None:
                queries.merge_packet_input(conn, imported_input)
            if created and reg_meta.get("threshold") is not None:
                queries.write_meta(conn, "threshold", reg_meta["threshold"])
            elif not created and queries.read_meta(conn).get("threshold") is not None:
                log.warning(
                    "%s: its threshold was chosen without the imported devices; choose it again", path_or_url
                )
        label = registry.label
    return ImportSummary(
        label, tuple(d["device_id"] for d in manifest["devices"]), int(emb.shape[0]), created
    )


def _content_sha256(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _read_export(path: pathlib.Path) -> tuple[dict[str, Any], np.ndarray]:
    """The manifest and embeddings of an export, every checksum and count verified."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise InputDataError(path, "no such file") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputDataError(path, f"not a lora-rffi registry export ({exc})") from None
    with zf:
        try:
            manifest = json.loads(zf.read(_MANIFEST))
        except KeyError:
            raise InputDataError(path, f"not a lora-rffi registry export (no {_MANIFEST})") from None
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise InputDataError(path, f"the registry export is damaged ({exc})") from None
        _verify_manifest(path, manifest)
        try:
            h = hashlib.sha256()
            with zf.open(_EMBEDDINGS) as fh:
                while chunk := fh.read(_CHUNK_BYTES):
                    h.update(chunk)
            if h.hexdigest() != manifest["embeddings"]["sha256"]:
                raise InputDataError(
                    path, f"{_EMBEDDINGS} does not match the manifest's sha256 (edited or damaged)"
                )
            with zf.open(_EMBEDDINGS) as fh:
                emb = np.load(fh, allow_pickle=False)
        except KeyError:
            raise InputDataError(path, f"the registry export has no {_EMBEDDINGS}") from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise InputDataError(path, f"the registry export is damaged ({exc})") from None
    dim = manifest["registry"]["embedding_dim"]
    n = sum(d["n_embeddings"] for d in manifest["devices"])
    if emb.dtype != np.dtype(EMBEDDING_DTYPE) or emb.shape != (n, dim):
        raise InputDataError(
            path, f"{_EMBEDDINGS} is {emb.dtype} {emb.shape}, expected {EMBEDDING_DTYPE} {(n, dim)}"
        )
    return manifest, emb


def _verify_manifest(path: pathlib.Path, manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise InputDataError(path, "not a lora-rffi registry export (manifest format)")
    if manifest.get("format_version", 0) > EXPORT_VERSION:
        raise InputDataError(
            path,
            f"export format_version {manifest['format_version']} is newer than this software reads "
            f"({EXPORT_VERSION}); upgrade lora-rffi",
        )
    body = {k: v for k, v in manifest.items() if k != "content_sha256"}
    if manifest.get("content_sha256") != _content_sha256(body):
        raise InputDataError(path, "the manifest does not match its content_sha256 (edited or damaged)")


def _device_values(path: object, d: dict[str, Any]) -> dict[str, Any]:
    """Column values of a device as the manifest records it."""
    try:
        values = {k: d[k] for k in _DEVICE_COLUMNS}
        values |= {k: d.get(k) for k in IQ_COLUMNS}  # exports of registries before schema 4 have none
        measured = values["iq_image_re"] is not None
        values["iq_fit"] = d.get("iq_fit", iq_fit_name(0) if measured else None)  # before schema 5: one-step
        values["id"] = int(d["device_id"])
        values["enrolled_at"] = as_utc(datetime.fromisoformat(d["enrolled_at"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputDataError(path, f"device entry {d!r} in the manifest is malformed: {exc!r}") from None
    return values
