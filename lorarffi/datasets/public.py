"""The public LoRa_RFFI HDF5 layout (Shen et al., IEEE DataPort "lorarffidataset").

A file holds two datasets:

- ``data``: real, shape (N, 2L); row ``i`` is ``[I(L) | Q(L)]``, the in-phase then the quadrature part of
  packet ``i`` (HDF5 has no complex type, so the authors concatenate them). L = 8192 in the published files.
- ``label``: device ids, **1-based** as stored, shape (1, N) (MATLAB row vector) or (N, 1) or (N,), float or
  integer.

:func:`load_public` reads only the selected rows: the labels are read whole (N numbers), the IQ rows in
sorted order, one slice read per contiguous run, so 100 packets of a multi-GB file cost 100 rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError, InputDataError

__all__ = [
    "load_public",
    "PacketSelection",
    "select_rows",
    "open_h5",
    "check_public_layout",
    "read_h5_rows",
    "public_rows_to_iq",
    "read_public_iq",
]

#: ``packets`` argument: a slice or range of per-device packet indices, a list of them, or None (all).
PacketSelection = slice | range | Sequence[int] | None

#: Rows read per HDF5 call when copying or loading many rows (bounds the temporary float buffer).
_BLOCK_BYTES = 32 << 20


def open_h5(path: str | os.PathLike[str], mode: str = "r", **kwargs: Any):  # -> h5py.File
    """Open an HDF5 file, turning every h5py/OS failure into :class:`InputDataError` naming the file."""
    import h5py

    p = Path(path)
    if mode == "r" and not p.exists():
        raise InputDataError(p, "no such file")
    try:
        return h5py.File(p, mode, **kwargs)
    except FileExistsError:
        raise InputDataError(p, "file exists (refusing to overwrite it)") from None
    except OSError as exc:
        text = str(exc)
        if "truncated file" in text:
            problem = "truncated HDF5 file (" + text.split("(", 1)[-1].rstrip(")") + ")"
        elif "file signature not found" in text:
            problem = "not an HDF5 file (file signature not found)"
        elif mode == "r" and p.is_dir():
            problem = "is a directory, not an HDF5 file"
        else:
            problem = f"cannot open as HDF5: {text}"
        raise InputDataError(p, problem) from None


# -- validation ---------------------------------------------------------------------------------------------


def check_public_layout(f, path: Path) -> tuple[Any, npt.NDArray[np.int64]]:
    """Check an open file of the public layout; return its ``data`` dataset (not read) and labels.

    Parameters
    ----------
    f : h5py.File
        The open file.
    path : Path
        Its path, for error messages.

    Returns
    -------
    data : h5py.Dataset, shape (N, 2L)
        Rows of ``[I(L) | Q(L)]``.
    labels : ndarray of int64, shape (N,)
        Device ids as stored (1-based).

    Raises
    ------
    InputDataError
        Missing ``data`` or ``label``, wrong shapes or dtypes, a label count unlike the row count, or a label
        that is not an integer.
    """
    import h5py

    missing = [n for n in ("data", "label") if not isinstance(f.get(n), h5py.Dataset)]
    if missing:
        have = sorted(f.keys())
        raise InputDataError(path, f"no dataset {' or '.join(repr(m) for m in missing)} "
                                   f"(a LoRa_RFFI file holds 'data' and 'label'; this one has {have})")
    data = f["data"]
    if data.ndim != 2:
        raise InputDataError(path, f"dataset 'data' has shape {data.shape}, expected (N, 2L) rows of [I | Q]")
    if data.dtype.kind not in "fiu":
        raise InputDataError(path, f"dataset 'data' has dtype {data.dtype}, expected real numbers [I | Q]")
    if data.shape[1] % 2:
        raise InputDataError(path, f"dataset 'data' rows have odd length {data.shape[1]}: "
                                   "a row is [I(L) | Q(L)], so its length must be even")
    if data.shape[1] == 0:
        raise InputDataError(path, "dataset 'data' has rows of length 0")
    label_ds = f["label"]
    shape = label_ds.shape
    n = data.shape[0]
    if not (len(shape) == 1 or (len(shape) == 2 and 1 in shape)):
        raise InputDataError(path, f"dataset 'label' has shape {shape}, expected (1, N) or (N, 1)")
    if label_ds.dtype.kind not in "fiu":
        raise InputDataError(path, f"dataset 'label' has dtype {label_ds.dtype}, expected numbers")
    try:
        raw = np.asarray(label_ds[()]).reshape(-1)
    except OSError as exc:
        raise InputDataError(path, f"cannot read dataset 'label' (corrupt or truncated file?): {exc}"
                             ) from None
    if raw.size != n:
        raise InputDataError(path, f"dataset 'label' has {raw.size} entries but 'data' has {n} rows")
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            bad = raw[~(np.isfinite(raw) & (raw == np.round(raw)))][0]
            raise InputDataError(path, f"dataset 'label' holds {bad.item()!r}, which is not an integer "
                                       "device id")
    return data, raw.astype(np.int64)


# -- selection -----------------------------------------------------------------------------------------------


def _as_id_list(devices: int | Iterable[int] | None) -> list[int] | None:
    if devices is None:
        return None
    if isinstance(devices, (int, np.integer)):
        return [int(devices)]
    try:
        out = [int(d) for d in devices]
    except (TypeError, ValueError):
        raise ConfigError(f"devices={devices!r} is not valid: give device ids (ints) as stored in the file"
                          ) from None
    return out


def select_rows(
    device_ids: npt.NDArray[np.integer], devices: int | Iterable[int] | None = None,
    packets: PacketSelection = None, *, source: object = "dataset",
) -> npt.NDArray[np.int64]:
    """Sorted row indices of the chosen devices' chosen packets.

    Parameters
    ----------
    device_ids : ndarray of int, shape (N,)
        Device id of every row, as stored.
    devices : int or iterable of int, optional
        Device ids to keep (default all). An id absent from the file is an error.
    packets : slice, range or sequence of int, optional
        Per-device packet indices (0-based, in file order within each device), the same for every device,
        as in the reference loader ``np.where(label == dev)[0][pkt_range]``. A slice is clipped to what a
        device has; explicit indices past a device's count are an error.
    source : object
        Name used in error messages.

    Returns
    -------
    rows : ndarray of int64, shape (n,)
        Increasing row indices.
    """
    ids = np.asarray(device_ids).reshape(-1)
    wanted = _as_id_list(devices)
    present = np.unique(ids)
    if wanted is None:
        wanted = present.tolist()
    else:
        absent = sorted(set(wanted) - set(present.tolist()))
        if absent:
            raise ConfigError(f"devices {_id_summary(np.asarray(absent))} are not in {source}, which holds "
                              f"devices {_id_summary(present)}")
        wanted = sorted(set(wanted))
    if packets is None:
        rows = np.flatnonzero(np.isin(ids, wanted))
        return rows.astype(np.int64)
    if isinstance(packets, range):
        packets = list(packets)
    parts = []
    for dev in wanted:
        dev_rows = np.flatnonzero(ids == dev)
        if isinstance(packets, slice):
            parts.append(dev_rows[packets])
        else:
            try:
                pk = np.asarray(packets, dtype=np.int64).reshape(-1)
            except (TypeError, ValueError):
                raise ConfigError(f"packets={packets!r} is not valid: give a slice, range or list of "
                                  "per-device packet indices") from None
            if pk.size and (pk.max() >= dev_rows.size or pk.min() < -dev_rows.size):
                raise ConfigError(f"packets asks for packet {int(pk.max())} of device {dev}, which has "
                                  f"{dev_rows.size} packets in {source}")
            parts.append(dev_rows[pk])
    rows = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return rows.astype(np.int64)


def _id_summary(ids: npt.NDArray[np.integer]) -> str:
    ids = np.asarray(ids)
    if ids.size == 0:
        return "none"
    if ids.size > 2 and np.array_equal(ids, np.arange(ids[0], ids[0] + ids.size)):
        return f"{int(ids[0])}-{int(ids[-1])}"
    return ", ".join(str(int(i)) for i in ids[:20]) + (" ..." if ids.size > 20 else "")


# -- reading rows --------------------------------------------------------------------------------------------


def _runs(rows: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """Split increasing unique indices into maximal [start, stop) runs."""
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [rows.size]])
    return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


def read_h5_rows(
    ds, rows: npt.NDArray[np.int64], *, source: object, block_rows: int | None = None
) -> np.ndarray:
    """Read increasing unique ``rows`` of a 2-D+ HDF5 dataset, one slice per contiguous run.

    Returns an array of shape (len(rows), *ds.shape[1:]) in the dataset's dtype.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((rows.size, *ds.shape[1:]), dtype=ds.dtype)
    if rows.size == 0:
        return out
    row_bytes = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    block = block_rows or max(1, _BLOCK_BYTES // row_bytes)
    try:
        # One slice read per contiguous run (split into blocks): h5py's fancy indexing is several times
        # slower than a loop of slices, even for scattered single rows.
        pos = 0
        for a, b in _runs(rows):
            for s in range(a, b, block):
                e = min(b, s + block)
                out[pos: pos + e - s] = ds[s:e]
                pos += e - s
    except (OSError, ValueError, KeyError) as exc:
        raise InputDataError(source, f"cannot read rows of dataset {ds.name!r} (corrupt or truncated "
                                     f"file?): {exc}") from None
    return out


def public_rows_to_iq(block: np.ndarray) -> npt.NDArray[np.complex64]:
    """Convert [I | Q] rows (n, 2L) to complex64 (n, L)."""
    half = block.shape[1] // 2
    iq = np.empty((block.shape[0], half), dtype=np.complex64)
    iq.real = block[:, :half]
    iq.imag = block[:, half:]
    return iq


def read_public_iq(ds, rows: npt.NDArray[np.int64], *, source: object) -> npt.NDArray[np.complex64]:
    """Read increasing ``rows`` of a public ``data`` dataset as complex64 (n, L), in bounded blocks."""
    rows = np.asarray(rows, dtype=np.int64)
    half = ds.shape[1] // 2
    out = np.empty((rows.size, half), dtype=np.complex64)
    row_bytes = ds.shape[1] * ds.dtype.itemsize
    block = max(1, _BLOCK_BYTES // row_bytes)
    for s in range(0, rows.size, block):
        out[s: s + block] = public_rows_to_iq(read_h5_rows(ds, rows[s: s + block], source=source))
    return out


# -- the loader ----------------------------------------------------------------------------------------------


def load_public(
    path: str | os.PathLike[str], devices: int | Iterable[int] | None = None, packets: PacketSelection = None
) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.int64]]:
    """Load preambles from a file in the public LoRa_RFFI layout.

    Parameters
    ----------
    path : path-like
        HDF5 file with datasets ``data`` (N, 2L) rows of [I | Q] and ``label`` (1, N) or (N, 1).
    devices : int or iterable of int, optional
        Device ids as stored in the file (1-based), default all.
    packets : slice, range or sequence of int, optional
        Packet indices within each device, e.g. ``range(0, 100)`` or ``slice(0, 100)`` for each device's
        first 100 packets (default all).

    Returns
    -------
    iq : ndarray of complex64, shape (n, L)
        The selected packets in file order (device by device in the published files, which are grouped).
    device_ids : ndarray of int64, shape (n,)
        Their device ids **as stored (1-based)**; the reference code subtracts 1, this function does not.

    Raises
    ------
    InputDataError
        Missing/truncated/corrupt file, missing ``data`` or ``label``, odd row length, label count not equal
        to the row count, non-integer labels.
    ConfigError
        A requested device is not in the file, or an explicit packet index exceeds a device's packets.

    Examples
    --------
    >>> iq, ids = load_public("dataset_residential.h5", [31, 32], slice(0, 50))  # doctest: +SKIP
    >>> iq.shape, ids[[0, -1]]  # doctest: +SKIP
    ((100, 8192), array([31, 32]))
    """
    p = Path(path)
    with open_h5(p) as f:
        data, labels = check_public_layout(f, p)
        rows = select_rows(labels, devices, packets, source=p)
        iq = read_public_iq(data, rows, source=p)
    return iq, labels[rows]
