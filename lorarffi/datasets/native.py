"""Our HDF5 preamble-set schema, one reader for both layouts, and conversion between them.

The schema is documented in ``docs/dataset-format.md``. In short: a dataset ``preambles`` of complex64
(N, L) (HDF5 compound ``{r, i}`` of float32, h5py's convention), per-packet 1-D datasets ``device_id``,
``cfo_hz``, ``snr_db``, ``start``, ``capture_time_s``, ``source_index``, a table ``sources`` (one JSON record
per writing session) and root attributes with the LoRa parameters, software version and provenance. Every
dataset is chunked, gzip-compressed and resizable along the packet axis, so a live capture appends packets
without rewriting the file (:class:`PreambleWriter`).

:func:`open_preamble_file` gives random access to either layout (ours or the public LoRa_RFFI one) for a
torch ``Dataset``; :func:`load_dataset` loads a selection; :func:`convert` converts between the layouts.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lorarffi import __version__
from lorarffi.datasets.handles import Closeable, PickledWithoutHandles
from lorarffi.datasets.public import (
    PacketSelection,
    check_public_layout,
    open_h5,
    public_rows_to_iq,
    read_h5_rows,
    select_rows,
)
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError, InputDataError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Layout",
    "PreambleWriter",
    "PreambleFile",
    "open_preamble_file",
    "load_dataset",
    "detect_layout",
    "convert",
    "META_FIELDS",
]

log = logging.getLogger(__name__)

FORMAT_NAME = "lorarffi-preambles"
FORMAT_VERSION = 1
Layout = Literal["public", "native"]

#: Per-packet metadata datasets: name -> (dtype, value meaning "unknown").
META_FIELDS: dict[str, tuple[str, Any]] = {
    "device_id": ("int64", None),
    "cfo_hz": ("float64", math.nan),
    "snr_db": ("float32", math.nan),
    "start": ("int64", -1),
    "capture_time_s": ("float64", math.nan),
    "source_index": ("int32", 0),
}
_CHUNK_BYTES = 64 << 10  # preamble chunk target: 1 row of 8192 complex64 (random reads decompress 1 row)
_META_CHUNK = 4096
_RDCC_BYTES = 16 << 20
_PUBLIC_ATTR = "lorarffi_conversion"  # root attribute we add to public files we write (LoRa parameters)


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _plain(cfg: LoRaConfig | None) -> str:
    """LoRa parameters in words, for messages: ``SF7, 125 kHz, 1 MS/s, 8 preamble symbols``."""
    if cfg is None:
        return "unstated LoRa parameters"
    return (f"SF{cfg.sf}, {cfg.bw_hz / 1e3:g} kHz, {cfg.fs_hz / 1e6:g} MS/s, {cfg.preamble_symbols} preamble "
            "symbols")


def detect_layout(f, path: object) -> Layout:
    """``"native"`` or ``"public"`` for an open h5py file; anything else is an :class:`InputDataError`."""
    if f.attrs.get("lorarffi_format") == FORMAT_NAME or "preambles" in f:
        return "native"
    if "data" in f or "label" in f:
        return "public"
    raise InputDataError(path, f"neither the public LoRa_RFFI layout ('data' + 'label') nor a lora-rffi "
                               f"preamble file ('preambles'); it holds {sorted(f.keys())}")


def _cfg_from_attrs(attrs, path: object) -> LoRaConfig | None:
    text = attrs.get("lora_config")
    if text is None:
        return None
    try:
        d = json.loads(text)
        return None if d is None else LoRaConfig.from_dict(d)
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputDataError(path, f"attribute lora_config is not valid JSON: {exc}") from None
    except ConfigError as exc:
        raise InputDataError(path, f"attribute lora_config is not a valid LoRaConfig: {exc}") from None


# -- writing -------------------------------------------------------------------------------------------------


class PreambleWriter(Closeable):
    """Write or extend a lora-rffi preamble file, one batch of packets per :meth:`append`.

    Parameters
    ----------
    path : path-like
        The ``.h5`` file.
    cfg : LoRaConfig or None
        LoRa parameters of the preambles (stored as attributes); None when unknown (e.g. a converted public
        file). When appending, it must equal the file's.
    source : str
        Where these packets come from (``"simulate seed=3 session=1"``, ``"rtlsdr 868.1 MHz"``, an input
        file name); one entry of the file's ``sources`` table per writer, referenced by each packet.
    provenance : dict, optional
        Anything JSON-serialisable describing how the data was made (command line, seed, hardware).
    append : bool
        Extend an existing file instead of creating one (a missing file is created).
    overwrite : bool
        Replace an existing file when not appending (default: refuse).
    compression_level : int or None
        gzip level 1-9 (default 1: most of the gain, fast), or None for no compression.
    iq_dtype : {"complex64", "complex128"}
        Storage type of ``preambles``; readers always return complex64. complex128 exists so that a public
        file stored as float64 converts to this layout and back bit-exactly.

    Notes
    -----
    Each :meth:`append` resizes the datasets, writes the new rows and flushes the file, so a crash loses
    at most the batch being written. HDF5 locks the file while it is open for writing: readers open it after
    :meth:`close` (or between captures).

    Examples
    --------
    >>> with PreambleWriter("sim.h5", LoRaConfig(), source="example") as w:  # doctest: +SKIP
    ...     w.append(preambles, device_ids, cfo_hz=cfo_hz)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        cfg: LoRaConfig | None,
        *,
        source: str,
        provenance: dict[str, Any] | None = None,
        append: bool = False,
        overwrite: bool = False,
        compression_level: int | None = 1,
        iq_dtype: Literal["complex64", "complex128"] = "complex64",
    ) -> None:
        if cfg is not None and not isinstance(cfg, LoRaConfig):
            raise ConfigError(f"cfg={cfg!r} is not valid: give a LoRaConfig or None")
        if compression_level is not None and not (
                isinstance(compression_level, int) and 0 <= compression_level <= 9):
            raise ConfigError(f"compression_level={compression_level!r} is not valid: use 0-9 or None")
        if iq_dtype not in ("complex64", "complex128"):
            raise ConfigError(f"iq_dtype={iq_dtype!r} is not valid: use 'complex64' or 'complex128'")
        try:
            session = json.dumps({"name": str(source), "started_utc": _utc_now(), "software": "lora-rffi",
                                  "software_version": __version__, "provenance": provenance or {}})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"provenance is not JSON-serialisable: {exc}") from None
        self.path = Path(path)
        self.cfg = cfg
        self._compression = compression_level
        self._iq_dtype = np.dtype(iq_dtype)
        exists = self.path.exists()
        if append and exists:
            self._f = open_h5(self.path, "a")
            try:
                self._check_appendable()
            except BaseException:
                self._f.close()
                raise
        else:
            if exists and not overwrite:
                raise ConfigError(f"{self.path} exists: choose another name, or replace it (--overwrite; "
                                  "overwrite=True from Python) or extend it (append=True from Python)")
            self._f = open_h5(self.path, "w")
            self._init_file(provenance or {})
        self._source_index = self._add_source(session)
        self._f.flush()

    # -- file set-up ----------------------------------------------------------------------------------------
    def _init_file(self, provenance: dict[str, Any]) -> None:
        import h5py

        a = self._f.attrs
        a["lorarffi_format"] = FORMAT_NAME
        a["format_version"] = FORMAT_VERSION
        a["software"] = "lora-rffi"
        a["software_version"] = __version__
        a["created_utc"] = _utc_now()
        a["lora_config"] = json.dumps(None if self.cfg is None else self.cfg.to_dict())
        if self.cfg is not None:
            a["sf"] = self.cfg.sf
            a["bw_hz"] = self.cfg.bw_hz
            a["fs_hz"] = self.cfg.fs_hz
            a["preamble_symbols"] = self.cfg.preamble_symbols
            a["sync_word"] = self.cfg.sync_word
        a["provenance"] = json.dumps(provenance)
        a["n_samples_per_packet"] = 0
        kw = self._filters()
        for name, (dtype, _) in META_FIELDS.items():
            self._f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(_META_CHUNK,),
                                   **kw)
        self._f.create_dataset("sources", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"),
                               chunks=(64,))

    def _filters(self) -> dict[str, Any]:
        if not self._compression:
            return {}
        return {"compression": "gzip", "compression_opts": self._compression, "shuffle": True}

    def _check_appendable(self) -> None:
        f = self._f
        layout = detect_layout(f, self.path)
        if layout != "native":
            raise ConfigError(f"{self.path} is in the public LoRa_RFFI layout: convert it (lora-rffi dataset "
                              "convert --to native) before appending")
        version = int(f.attrs.get("format_version", 0))
        if version != FORMAT_VERSION:
            raise InputDataError(self.path, f"format_version {version} is not {FORMAT_VERSION}, which this "
                                            f"lora-rffi {__version__} writes")
        stored = _cfg_from_attrs(f.attrs, self.path)
        if stored != self.cfg:
            raise ConfigError(f"{self.path} holds packets at {_plain(stored)}, these are at "
                              f"{_plain(self.cfg)}: append only packets with the same LoRa parameters")
        if "preambles" in f:
            self._iq_dtype = f["preambles"].dtype
            dcpl = f["preambles"].compression_opts
            self._compression = dcpl if isinstance(dcpl, int) else None
        missing = [n for n in (*META_FIELDS, "sources") if n not in f]
        if missing:
            raise InputDataError(self.path, f"lora-rffi preamble file lacks datasets {missing}")

    def _add_source(self, record: str) -> int:
        ds = self._f["sources"]
        n = ds.shape[0]
        ds.resize((n + 1,))
        ds[n] = record
        return n

    def _create_preambles(self, n_samples: int) -> None:
        row_bytes = n_samples * self._iq_dtype.itemsize
        rows = max(1, min(1024, _CHUNK_BYTES // row_bytes))
        self._f.create_dataset("preambles", shape=(0, n_samples), maxshape=(None, n_samples),
                               dtype=self._iq_dtype, chunks=(rows, n_samples), **self._filters())
        self._f.attrs["n_samples_per_packet"] = n_samples

    # -- appending ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._f["device_id"].shape[0])

    @property
    def n_samples_per_packet(self) -> int | None:
        """Samples per preamble row, fixed by the first :meth:`append` (None before)."""
        return int(self._f["preambles"].shape[1]) if "preambles" in self._f else None

    def append(
        self,
        preambles: npt.ArrayLike,
        device_ids: npt.ArrayLike,
        *,
        cfo_hz: npt.ArrayLike | None = None,
        snr_db: npt.ArrayLike | None = None,
        start: npt.ArrayLike | None = None,
        capture_time_s: npt.ArrayLike | None = None,
    ) -> int:
        """Append packets and flush the file.

        Parameters
        ----------
        preambles : array_like of complex, shape (N, L) or (L,)
            Aligned preambles; every append of a file has the same L.
        device_ids : array_like of int, shape (N,) or ()
            Device id of each packet (any integers; the public files use 1-based ids).
        cfo_hz : array_like of float, shape (N,) or (), optional
            Carrier frequency offset of each packet in Hz (unknown: NaN).
        snr_db : array_like of float, shape (N,) or (), optional
            Signal-to-noise ratio in dB (unknown: NaN).
        start : array_like of int, shape (N,) or (), optional
            Absolute sample index of the first preamble sample in the source recording (unknown: -1).
        capture_time_s : array_like of float, shape (N,) or (), optional
            Time of the first preamble sample, seconds since 1970-01-01 UTC (unknown: NaN).

        Returns
        -------
        n_packets : int
            Packets in the file after this append.
        """
        if self._f is None or not self._f.id.valid:
            raise ConfigError(f"PreambleWriter for {self.path} is closed")
        iq = np.asarray(preambles)
        if iq.ndim == 1:
            iq = iq[None, :]
        if iq.ndim != 2 or iq.shape[1] == 0:
            raise ConfigError(f"preambles has shape {np.shape(preambles)}, expected (N, L) or (L,)")
        if iq.dtype.kind not in "fciu":
            raise ConfigError(f"preambles has dtype {iq.dtype}, expected complex samples")
        iq = iq.astype(self._iq_dtype, copy=False)
        if not np.all(np.isfinite(iq)):
            raise ConfigError("preambles holds NaN or infinite samples")
        n = iq.shape[0]
        ids = np.asarray(device_ids)
        if ids.dtype.kind == "f" and np.all(ids == np.round(ids)):
            ids = ids.astype(np.int64)
        if ids.dtype.kind not in "iu":
            raise ConfigError(f"device_ids has dtype {ids.dtype}, expected integers")
        columns = {"device_id": np.broadcast_to(ids, (n,)) if ids.ndim == 0 else ids}
        for name, value in (("cfo_hz", cfo_hz), ("snr_db", snr_db), ("start", start),
                            ("capture_time_s", capture_time_s)):
            dtype, unknown = META_FIELDS[name]
            arr = np.full(n, unknown, dtype=dtype) if value is None else np.asarray(value)
            if arr.ndim == 0:
                arr = np.broadcast_to(arr, (n,))
            columns[name] = arr
        columns["source_index"] = np.full(n, self._source_index, dtype=np.int32)
        for name, arr in columns.items():
            if arr.shape != (n,):
                raise ConfigError(f"{name} has shape {arr.shape}, expected ({n},) to match preambles")
        if "preambles" not in self._f:
            self._create_preambles(iq.shape[1])
        ds = self._f["preambles"]
        if iq.shape[1] != ds.shape[1]:
            raise ConfigError(f"preambles have {iq.shape[1]} samples, but {self.path} holds {ds.shape[1]} "
                              "per packet")
        if ds.shape[0] != len(self):
            raise InputDataError(self.path, f"'preambles' has {ds.shape[0]} rows but 'device_id' {len(self)} "
                                            "(an earlier write was interrupted)")
        n0 = ds.shape[0]
        ds.resize((n0 + n, ds.shape[1]))
        ds[n0:] = iq
        for name, arr in columns.items():
            col = self._f[name]
            col.resize((n0 + n,))
            col[n0:] = arr.astype(META_FIELDS[name][0], copy=False)
        self._f.flush()
        return n0 + n

    # -- closing --------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if self._f is not None:
            if self._f.id.valid:
                self._f.close()
            self._f = None


# -- reading -------------------------------------------------------------------------------------------------


class PreambleFile(PickledWithoutHandles, Closeable):
    """Random access to the packets of a preamble file in either layout.

    Made by :func:`open_preamble_file`. Keeps the path and opens the HDF5 file lazily in each process, so it
    can be pickled into torch ``DataLoader`` worker processes (each re-opens the file; nothing is copied).

    Attributes
    ----------
    path : Path
    layout : {"native", "public"}
    n_samples_per_packet : int
        L, complex samples per row.
    cfg : LoRaConfig or None
        LoRa parameters when the file states them (native files; public files we wrote).
    """

    handle_attrs = ("_f", "_pid")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._f = None
        self._pid: int | None = None
        f = self._file()
        self.layout: Layout = detect_layout(f, self.path)
        if self.layout == "public":
            data, labels = check_public_layout(f, self.path)
            self._device_ids = labels
            self.n_samples_per_packet = int(data.shape[1] // 2)
            conv = f.attrs.get(_PUBLIC_ATTR)
            info: dict[str, Any] = {}
            if conv is not None:
                try:
                    info = json.loads(conv)
                except (json.JSONDecodeError, TypeError):
                    info = {}
            self.cfg = LoRaConfig.from_dict(info["lora_config"]) if info.get("lora_config") else None
            self._sources = [{"name": self.path.name, "layout": "public"}]
        else:
            self._check_native(f)
            self.cfg = _cfg_from_attrs(f.attrs, self.path)
            try:
                self._device_ids = np.asarray(f["device_id"][()], dtype=np.int64)
                raw_sources = [s.decode() if isinstance(s, bytes) else str(s) for s in f["sources"][()]]
            except OSError as exc:
                raise InputDataError(self.path, "cannot read metadata (corrupt or truncated file?): "
                                                f"{exc}") from None
            self._sources = []
            for s in raw_sources:
                try:
                    self._sources.append(json.loads(s))
                except json.JSONDecodeError:
                    self._sources.append({"name": s})
            if "preambles" in f:
                self.n_samples_per_packet = int(f["preambles"].shape[1])
            else:
                self.n_samples_per_packet = int(f.attrs.get("n_samples_per_packet", 0)) or (
                    self.cfg.preamble_samples if self.cfg is not None else 0)

    def _check_native(self, f) -> None:
        version = int(f.attrs.get("format_version", FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise InputDataError(self.path, f"format_version {version} is newer than {FORMAT_VERSION}: "
                                            "upgrade lora-rffi to read it")
        missing = [n for n in ("device_id", "sources") if n not in f]
        if missing:
            raise InputDataError(self.path, f"lora-rffi preamble file lacks datasets {missing}")
        n = f["device_id"].shape[0]
        if "preambles" in f:
            p = f["preambles"]
            if p.ndim != 2 or p.dtype.kind != "c":
                raise InputDataError(self.path, f"dataset 'preambles' has shape {p.shape} and dtype "
                                                f"{p.dtype}, expected complex (N, L)")
            if p.shape[0] != n:
                raise InputDataError(self.path, f"'preambles' has {p.shape[0]} rows but 'device_id' has {n}")
        elif n:
            raise InputDataError(self.path, f"no dataset 'preambles' although 'device_id' has {n} entries")
        for name in META_FIELDS:
            if name in f and f[name].shape != (n,):
                raise InputDataError(self.path, f"dataset {name!r} has shape {f[name].shape}, "
                                                f"expected ({n},)")

    # -- handle management ----------------------------------------------------------------------------------
    def _file(self):
        if self._f is None or self._pid != os.getpid() or not self._f.id.valid:
            self._f = open_h5(self.path, "r", rdcc_nbytes=_RDCC_BYTES)
            self._pid = os.getpid()
        return self._f

    def close(self) -> None:
        """Close the HDF5 handle of this process (reading again re-opens it)."""
        if self._f is not None and self._pid == os.getpid() and self._f.id.valid:
            self._f.close()
        self._f = None

    def __len__(self) -> int:
        return int(self._device_ids.size)

    def __repr__(self) -> str:
        return (f"PreambleFile({str(self.path)!r}, layout={self.layout!r}, n_packets={len(self)}, "
                f"n_samples_per_packet={self.n_samples_per_packet})")

    # -- queries ---------------------------------------------------------------------------------------------
    @property
    def device_ids(self) -> npt.NDArray[np.int64]:
        """Device id of every row, as stored (int64, shape (N,)); read once, without the IQ."""
        return self._device_ids

    @property
    def sources(self) -> list[dict[str, Any]]:
        """The ``sources`` table: one record per writing session (name, time, software, provenance)."""
        return list(self._sources)

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes of the file as plain Python values."""
        out = {}
        for k, v in self._file().attrs.items():
            if isinstance(v, np.generic):
                v = v.item()
            elif isinstance(v, np.ndarray):
                v = v.tolist()
            out[k] = v
        return out

    @property
    def iq_dtype(self) -> np.dtype:
        """Storage precision of the IQ: complex64, or complex128 (complex128 native, float64 public)."""
        f = self._file()
        if self.layout == "public":
            return np.dtype(np.complex128 if f["data"].dtype == np.float64 else np.complex64)
        return f["preambles"].dtype if "preambles" in f else np.dtype(np.complex64)

    def select(self, devices: int | Iterable[int] | None = None, packets: PacketSelection = None
               ) -> npt.NDArray[np.int64]:
        """Sorted row indices of the chosen devices' chosen per-device packets (see :func:`load_dataset`)."""
        return select_rows(self._device_ids, devices, packets, source=self.path)

    def _rows(self, indices: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"row index out of range for {self.path} with {n} packets")
        idx = np.where(idx < 0, idx + n, idx)
        uniq, inverse = np.unique(idx, return_inverse=True)
        return uniq, inverse

    def read_rows(self, indices: npt.ArrayLike, *, _native_precision: bool = False) -> np.ndarray:
        """Read packets by row index.

        Parameters
        ----------
        indices : array_like of int, shape (n,)
            Row indices in any order, repeats allowed (read once each, sorted, then reordered).

        Returns
        -------
        iq : ndarray of complex64, shape (n, L)
        """
        uniq, inverse = self._rows(indices)
        f = self._file()
        if self.layout == "public":
            raw = read_h5_rows(f["data"], uniq, source=self.path)
            if _native_precision and raw.dtype == np.float64:
                half = raw.shape[1] // 2
                block = raw[:, :half] + 1j * raw[:, half:]
            else:
                block = public_rows_to_iq(raw)
        elif uniq.size == 0:
            block = np.zeros((0, self.n_samples_per_packet), dtype=np.complex64)
        else:
            block = read_h5_rows(f["preambles"], uniq, source=self.path)
            if not _native_precision:
                block = block.astype(np.complex64, copy=False)
        return block[inverse] if not np.array_equal(inverse, np.arange(uniq.size)) else block

    def meta(self, indices: npt.ArrayLike) -> dict[str, np.ndarray]:
        """Per-packet metadata by row index.

        Returns
        -------
        meta : dict of ndarray, each shape (n,)
            ``device_id`` (int64), ``cfo_hz`` (float64, Hz), ``snr_db`` (float32), ``start`` (int64 sample
            index, -1 unknown), ``capture_time_s`` (float64, Unix seconds), ``source_index`` (int32) and
            ``source`` (str). Unknown values are NaN / -1; public files know only the device id.
        """
        uniq, inverse = self._rows(indices)
        out: dict[str, np.ndarray] = {}
        f = self._file()
        for name, (dtype, unknown) in META_FIELDS.items():
            if name == "device_id":
                out[name] = self._device_ids[uniq]
            elif self.layout == "native" and name in f and uniq.size:
                out[name] = read_h5_rows(f[name], uniq, source=self.path).astype(dtype, copy=False)
            else:
                out[name] = np.full(uniq.size, unknown, dtype=dtype)
        names = np.array([s.get("name", "") for s in self._sources] or [""], dtype=object)
        out["source"] = names[np.clip(out["source_index"], 0, names.size - 1)]
        return {k: v[inverse] for k, v in out.items()}


def open_preamble_file(path: str | os.PathLike[str]) -> PreambleFile:
    """Open a preamble file of either layout for random access (see :class:`PreambleFile`)."""
    return PreambleFile(path)


def load_dataset(
    path: str | os.PathLike[str], devices: int | Iterable[int] | None = None, packets: PacketSelection = None
) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.int64]]:
    """Load preambles from a file of either layout (the public LoRa_RFFI one or ours, detected).

    Parameters
    ----------
    path : path-like
    devices : int or iterable of int, optional
        Device ids as stored in the file (the public files are 1-based), default all.
    packets : slice, range or sequence of int, optional
        Packet indices within each device (see :func:`~lorarffi.datasets.public.load_public`).

    Returns
    -------
    iq : ndarray of complex64, shape (n, L)
        Selected packets in file order.
    device_ids : ndarray of int64, shape (n,)
    """
    with PreambleFile(path) as pf:
        rows = pf.select(devices, packets)
        return pf.read_rows(rows), pf.device_ids[rows]


# -- conversion ----------------------------------------------------------------------------------------------


def convert(
    in_path: str | os.PathLike[str], out_path: str | os.PathLike[str], to: Layout, *, overwrite: bool = False
) -> int:
    """Convert a preamble file between the public LoRa_RFFI layout and ours, streaming in blocks.

    Parameters
    ----------
    in_path, out_path : path-like
        Input file (either layout) and output file (written to a temporary name, then renamed).
    to : {"public", "native"}
        Output layout.
    overwrite : bool
        Replace an existing output file.

    Returns
    -------
    n_packets : int

    Notes
    -----
    IQ and device ids survive both round trips bit-exactly (native -> public -> native and
    public -> native -> public). The public layout holds only ``data`` and ``label``: per-packet CFO, SNR,
    start, capture time and sources are lost; the LoRa parameters and the original storage types are kept in
    a root attribute ``lorarffi_conversion`` the reference loader ignores.
    """
    if to not in ("public", "native"):
        raise ConfigError(f"to={to!r} is not valid: use 'public' or 'native'")
    src, dst = Path(in_path), Path(out_path)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ConfigError(f"output {dst} is the input file: choose another name")
    if dst.exists() and not overwrite:
        raise ConfigError(f"{dst} exists: choose another name or overwrite it (--overwrite)")
    tmp = dst.with_name(f".{dst.name}.part-{os.getpid()}")
    try:
        with PreambleFile(src) as pf:
            if to == "native":
                n = _to_native(pf, tmp)
            else:
                n = _to_public(pf, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info("converted %s (%s) -> %s (%s): %d packets", src, pf.layout, dst, to, n)
    return n


def _blocks(n: int, row_bytes: int) -> Iterable[tuple[int, int]]:
    step = max(1, (32 << 20) // max(1, row_bytes))
    for a in range(0, n, step):
        yield a, min(n, a + step)


def _public_info(pf: PreambleFile) -> dict[str, Any]:
    f = pf._file()
    if pf.layout == "public":
        label = f["label"]
        shape = "row" if label.ndim == 2 and label.shape[0] == 1 and label.shape[1] != 1 else (
            "column" if label.ndim == 2 else "flat")
        return {"data_dtype": str(f["data"].dtype), "label_dtype": str(label.dtype), "label_shape": shape}
    conv = {}
    for s in pf.sources:
        prov = s.get("provenance", {})
        if isinstance(prov, dict) and isinstance(prov.get("public_layout"), dict):
            conv = prov["public_layout"]
    return conv


def _to_native(pf: PreambleFile, out: Path) -> int:
    n = len(pf)
    if pf.layout == "native":
        prov = {"converted_from": str(pf.path), "from_layout": "native"}
        iq_dtype = "complex128" if pf.iq_dtype == np.complex128 else "complex64"
    else:
        prov = {"converted_from": str(pf.path), "from_layout": "public", "public_layout": _public_info(pf)}
        iq_dtype = "complex128" if pf.iq_dtype == np.complex128 else "complex64"
    with PreambleWriter(out, pf.cfg, source=f"convert {pf.path.name}", provenance=prov, overwrite=True,
                        iq_dtype=iq_dtype) as w:
        if pf.layout == "native":  # keep the input's session records, then the conversion's own
            own = w._f["sources"][0]
            w._f["sources"].resize((0,))
            for s in pf.sources:
                w._add_source(json.dumps(s))
            w._source_index = w._add_source(own)
        row_bytes = pf.n_samples_per_packet * np.dtype(iq_dtype).itemsize
        for a, b in _blocks(n, row_bytes):
            rows = np.arange(a, b)
            iq = pf.read_rows(rows, _native_precision=True)
            m = pf.meta(rows)
            w.append(iq, m["device_id"], cfo_hz=m["cfo_hz"], snr_db=m["snr_db"], start=m["start"],
                     capture_time_s=m["capture_time_s"])
            if pf.layout == "native":
                w._f["source_index"][a:b] = m["source_index"]
        if n == 0 and pf.n_samples_per_packet:
            w._create_preambles(pf.n_samples_per_packet)
    return n


def _to_public(pf: PreambleFile, out: Path) -> int:
    n, half = len(pf), pf.n_samples_per_packet
    info = _public_info(pf)
    precision = pf.iq_dtype
    data_dtype = np.dtype(info.get("data_dtype", "float64" if precision == np.complex128 else "float32"))
    label_dtype = np.dtype(info.get("label_dtype", "float64"))
    label_shape = info.get("label_shape", "row")
    f_out = open_h5(out, "w")
    try:
        rows_per_chunk = max(1, min(1024, _CHUNK_BYTES // (2 * half * data_dtype.itemsize)))
        data = f_out.create_dataset("data", shape=(n, 2 * half), dtype=data_dtype,
                                    chunks=(max(1, min(rows_per_chunk, n)), 2 * half) if n else None,
                                    compression="gzip" if n else None, compression_opts=1 if n else None,
                                    shuffle=bool(n))
        for a, b in _blocks(n, 2 * half * data_dtype.itemsize):
            iq = pf.read_rows(np.arange(a, b), _native_precision=True)
            block = np.concatenate([iq.real, iq.imag], axis=1)
            if data_dtype.kind in "iu":
                block = np.round(block)
            data[a:b] = block.astype(data_dtype)
        ids = pf.device_ids.astype(label_dtype)
        shape = {"row": (1, n), "column": (n, 1)}.get(label_shape, (n,))
        f_out.create_dataset("label", data=ids.reshape(shape))
        f_out.attrs[_PUBLIC_ATTR] = json.dumps({
            "software": "lora-rffi", "software_version": __version__, "converted_utc": _utc_now(),
            "converted_from": str(pf.path), "from_layout": pf.layout,
            "lora_config": None if pf.cfg is None else pf.cfg.to_dict(),
        })
    finally:
        f_out.close()
    return n
