"""One chunked reader for every IQ recording: raw headerless files, SigMF, and two-channel I/Q WAV.

:func:`open_recording` looks at the file and returns a :class:`Recording` that reads complex64 samples in
chunks, never the whole file: a 10 GB capture is read with plain file reads, one chunk at a time.

Supported kinds

- **Raw headerless** files (``rtl_sdr`` output, GNU Radio file sinks): ``format`` and ``fs_hz`` are required.
  ``cf32`` complex64 little-endian, ``ci16`` int16 I/Q little-endian scaled by 1/32768, ``cu8`` unsigned
  8-bit as ``rtl_sdr`` writes it, ``(x - 127.5) / 127.5``, ``ci8`` signed 8-bit scaled by 1/128.
- **SigMF** (``NAME.sigmf-meta`` + ``NAME.sigmf-data`` or a ``NAME.sigmf`` tar archive): sample rate,
  datatype, the captures' ``core:frequency`` / ``core:datetime`` and the annotations come from the metadata.
  Complex datatypes ``cf32``, ``cf64``, ``ci32``, ``ci16`` (``_le`` or ``_be``), ``ci8`` and ``cu8``.
- **WAV** files with two channels (channel 0 = I, channel 1 = Q), as SDR programs write them: 8-bit unsigned,
  16-bit or 32-bit signed integer, 32-bit or 64-bit float; RIFF or RF64; the rate is the header's.
  An ``auxi`` chunk (SDR#, HDSDR) gives the centre frequency and start time.

Every failure to read is an :class:`~lorarffi.errors.InputDataError` naming the file and the problem. A file
whose size is not a whole number of samples is read up to its last whole sample; the dropped trailing bytes
are counted in :attr:`Recording.n_dropped_bytes` and logged once as a warning.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import math
import os
import struct
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from lorarffi.datasets.handles import Closeable, PickledWithoutHandles
from lorarffi.errors import ConfigError, InputDataError

__all__ = [
    "Recording",
    "open_recording",
    "RAW_FORMATS",
    "SIGMF_DATATYPES",
    "sigmf_datatype",
    "iq_to_complex64",
]

log = logging.getLogger(__name__)

_ARCHIVE_SUFFIXES = (".sigmf", ".sigmf.gz", ".sigmf.xz", ".sigmf.bz2")
RawFormat = Literal["cf32", "ci16", "cu8", "ci8"]
#: Short names accepted for raw headerless files, and the SigMF datatype each one is.
RAW_FORMATS: dict[str, str] = {"cf32": "cf32_le", "ci16": "ci16_le", "cu8": "cu8", "ci8": "ci8"}


@dataclass(frozen=True, slots=True)
class _SampleFormat:
    """How one complex sample is stored: component dtype (with byte order), offset and scale to +-1."""

    component: str  # numpy dtype string of one component, e.g. "<i2"
    offset: float  # subtracted before scaling
    scale: float  # multiplied after the offset

    @property
    def sample_bytes(self) -> int:
        return 2 * np.dtype(self.component).itemsize


def _formats() -> dict[str, _SampleFormat]:
    out = {
        "cu8": _SampleFormat("u1", 127.5, 1 / 127.5),
        "ci8": _SampleFormat("i1", 0.0, 1 / 128),
    }
    for endian, mark in (("le", "<"), ("be", ">")):
        out[f"cf32_{endian}"] = _SampleFormat(f"{mark}f4", 0.0, 1.0)
        out[f"cf64_{endian}"] = _SampleFormat(f"{mark}f8", 0.0, 1.0)
        out[f"ci32_{endian}"] = _SampleFormat(f"{mark}i4", 0.0, 1 / 2**31)
        out[f"ci16_{endian}"] = _SampleFormat(f"{mark}i2", 0.0, 1 / 32768)
    return out


_FORMATS = _formats()
#: SigMF datatypes this reader converts to complex64.
SIGMF_DATATYPES: tuple[str, ...] = tuple(sorted(_FORMATS))


def sigmf_datatype(name: str) -> str:
    """The SigMF datatype for a raw format name (``"cu8"``, ``"ci16"``) or a SigMF datatype.

    Raises
    ------
    ConfigError
        If the name is neither a raw format nor a supported complex SigMF datatype.

    Examples
    --------
    >>> sigmf_datatype("ci16"), sigmf_datatype("cf32_le")
    ('ci16_le', 'cf32_le')
    """
    key = RAW_FORMATS.get(name, name)
    if key not in _FORMATS:
        raise ConfigError(
            f"format={name!r} is not supported: use one of {sorted(RAW_FORMATS)} or a SigMF datatype "
            f"{list(SIGMF_DATATYPES)}"
        )
    return key


def iq_to_complex64(raw: np.ndarray, datatype: str) -> npt.NDArray[np.complex64]:
    """Convert interleaved I/Q components of a SigMF ``datatype`` to complex64 scaled to about +-1.

    Parameters
    ----------
    raw : ndarray, shape (2 * n,)
        Interleaved components I0, Q0, I1, Q1, ... in the component dtype of ``datatype`` (any byte order).
    datatype : str
        SigMF datatype, e.g. ``"cu8"`` or ``"ci16_le"``.

    Returns
    -------
    iq : ndarray of complex64, shape (n,)
        Each component is the float32 nearest to ``(q - offset) * scale`` (8-bit types go through a lookup
        table computed in float64; the 16- and 32-bit scales are powers of two, exact in float32).
    """
    fmt = _FORMATS[sigmf_datatype(datatype)]
    comps = np.asarray(raw).reshape(-1, 2)
    if fmt.component[-2:] == "f4":
        return comps.astype("<f4", copy=False).view(np.complex64).reshape(-1).copy()
    out = np.empty(comps.shape[0], dtype=np.complex64)
    if fmt.component[-2:] == "f8":
        out.real = comps[:, 0]
        out.imag = comps[:, 1]
        return out
    if comps.dtype.itemsize == 1:
        work = _lut(fmt)[comps.view(np.uint8)]
    else:
        work = comps.astype(np.float32)
        work *= np.float32(fmt.scale)
    out.real = work[:, 0]
    out.imag = work[:, 1]
    return out


_LUTS: dict[_SampleFormat, np.ndarray] = {}


def _lut(fmt: _SampleFormat) -> npt.NDArray[np.float32]:
    """float32 value of each of the 256 byte patterns of an 8-bit component type."""
    if fmt not in _LUTS:
        q = np.arange(256, dtype=np.uint8).view(np.dtype(fmt.component)).astype(np.float64)
        _LUTS[fmt] = ((q - fmt.offset) * fmt.scale).astype(np.float32)
    return _LUTS[fmt]


# -- the reader ----------------------------------------------------------------------------------------------


class Recording(PickledWithoutHandles, Closeable):
    """An open IQ recording read in chunks; use :func:`open_recording` to make one.

    Attributes
    ----------
    path : Path
        The file given to :func:`open_recording` (for SigMF, the ``.sigmf-meta`` or ``.sigmf`` archive).
    data_path : Path
        The file that holds the samples.
    kind : {"raw", "sigmf", "sigmf-archive", "wav"}
    fs_hz : float
        Sample rate in Hz.
    center_freq_hz : float or None
        Receiver centre frequency in Hz when known.
    datatype : str
        SigMF datatype of the stored samples, e.g. ``"cu8"``.
    n_samples : int or None
        Complex samples in the file (whole samples only).
    start_time : datetime or None
        Time of the first sample (UTC) when known.
    annotations : list of dict
        SigMF annotations (empty for other kinds), sorted by ``core:sample_start``.
    captures : list of dict
        SigMF captures (one synthesised capture for other kinds).
    metadata : dict
        SigMF global object (synthesised from the header for other kinds).
    n_dropped_bytes : int
        Trailing bytes after the last whole sample, not read.

    Notes
    -----
    A Recording can be pickled: the copy keeps the path and re-opens the file in its own process.
    """

    handle_attrs = ("_fh", "_tar")

    def __init__(
        self,
        *,
        path: Path,
        data_path: Path,
        kind: str,
        fs_hz: float,
        center_freq_hz: float | None,
        datatype: str,
        data_offset: int,
        data_bytes: int,
        start_time: _dt.datetime | None,
        annotations: list[dict[str, Any]],
        captures: list[dict[str, Any]],
        metadata: dict[str, Any],
        tar_member: str | None = None,
    ) -> None:
        self.path = path
        self.data_path = data_path
        self.kind = kind
        self.fs_hz = float(fs_hz)
        self.center_freq_hz = None if center_freq_hz is None else float(center_freq_hz)
        self.datatype = datatype
        self.start_time = start_time
        self.annotations = annotations
        self.captures = captures
        self.metadata = metadata
        self._fmt = _FORMATS[datatype]
        self._data_offset = int(data_offset)
        self._tar_member = tar_member
        sample_bytes = self._fmt.sample_bytes
        self.n_samples: int | None = data_bytes // sample_bytes
        self.n_dropped_bytes = int(data_bytes - self.n_samples * sample_bytes)
        if self.n_dropped_bytes:
            log.warning("%s: %d trailing bytes are not a whole %s sample (%d bytes) and are not read",
                        data_path, self.n_dropped_bytes, datatype, sample_bytes)
        self._fh: BinaryIO | None = None
        self._tar: tarfile.TarFile | None = None

    # -- file handle, opened lazily (also after unpickling in a worker process) ------------------------------
    def _file(self) -> BinaryIO:
        if self._fh is None:
            try:
                if self._tar_member is not None:
                    self._tar = tarfile.open(self.data_path)
                    fh = self._tar.extractfile(self._tar_member)
                    if fh is None:
                        raise InputDataError(self.data_path, f"member {self._tar_member} is not a file")
                    self._fh = fh
                else:
                    self._fh = open(self.data_path, "rb")
            except (OSError, tarfile.TarError) as exc:
                raise InputDataError(self.data_path, f"cannot open: {exc}") from None
        return self._fh

    def close(self) -> None:
        """Close the underlying file; reading again re-opens it."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (f"Recording({str(self.path)!r}, kind={self.kind!r}, datatype={self.datatype!r}, "
                f"fs_hz={self.fs_hz:g}, n_samples={self.n_samples})")

    # -- reading ---------------------------------------------------------------------------------------------
    @property
    def duration_s(self) -> float | None:
        """Length of the recording in seconds."""
        return None if self.n_samples is None else self.n_samples / self.fs_hz

    def read(self, start: int, count: int) -> npt.NDArray[np.complex64]:
        """Read ``count`` samples from absolute sample index ``start``.

        Parameters
        ----------
        start : int
            First sample, 0-based, at least 0.
        count : int
            Number of samples; fewer are returned when the recording ends first (none past the end).

        Returns
        -------
        iq : ndarray of complex64, shape (n,), n <= count
            Samples scaled to about +-1 full scale.
        """
        start = int(start)
        count = int(count)
        if start < 0:
            raise ConfigError(f"start={start} is not valid: sample indices start at 0")
        if count < 0:
            raise ConfigError(f"count={count} is not valid: use 0 or more samples")
        n_total = self.n_samples if self.n_samples is not None else start + count
        count = max(0, min(count, n_total - start))
        if count == 0:
            return np.zeros(0, dtype=np.complex64)
        sample_bytes = self._fmt.sample_bytes
        fh = self._file()
        try:
            fh.seek(self._data_offset + start * sample_bytes)
            buf = fh.read(count * sample_bytes)
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise InputDataError(self.data_path, f"read failed at sample {start}: {exc}") from None
        got = len(buf) // sample_bytes
        if got < count:
            raise InputDataError(
                self.data_path,
                f"file ended at sample {start + got}, {self.n_samples} expected (truncated while open?)",
            )
        raw = np.frombuffer(buf, dtype=self._fmt.component)
        return iq_to_complex64(raw, self.datatype)

    def iter_chunks(
        self, n_samples_per_chunk: int = 1 << 18, *, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, npt.NDArray[np.complex64]]]:
        """Yield consecutive chunks of the recording.

        Parameters
        ----------
        n_samples_per_chunk : int
            Samples per chunk (the last one may be shorter).
        start, stop : int
            Absolute sample range to read, ``stop`` exclusive (default: the whole recording).

        Yields
        ------
        start : int
            Absolute index of the chunk's first sample.
        iq : ndarray of complex64, shape (n,)
        """
        if n_samples_per_chunk < 1:
            raise ConfigError(f"n_samples_per_chunk={n_samples_per_chunk} is not valid: use 1 or more")
        n_total = self.n_samples if self.n_samples is not None else 0
        end = n_total if stop is None else min(int(stop), n_total)
        pos = int(start)
        while pos < end:
            chunk = self.read(pos, min(n_samples_per_chunk, end - pos))
            if chunk.size == 0:
                return
            yield pos, chunk
            pos += chunk.size


# -- opening -------------------------------------------------------------------------------------------------


def open_recording(
    path: str | os.PathLike[str],
    *,
    format: RawFormat | str | None = None,
    fs_hz: float | None = None,
    center_freq_hz: float | None = None,
) -> Recording:
    """Open an IQ recording for chunked reading.

    Parameters
    ----------
    path : path-like
        A raw headerless file, a ``.sigmf-meta`` / ``.sigmf-data`` pair (either name), a ``.sigmf``
        archive, or a two-channel ``.wav`` file. The kind is recognised from the suffix and the first bytes.
    format : {"cf32", "ci16", "cu8", "ci8"} or SigMF datatype, optional
        Sample format; required for raw files. For SigMF and WAV files it must agree with the header.
    fs_hz : float, optional
        Sample rate in Hz; required for raw files and SigMF files without ``core:sample_rate``; must agree
        with a rate stored in the file.
    center_freq_hz : float, optional
        Receiver centre frequency in Hz; used when the file does not store one, must agree if it does.

    Returns
    -------
    Recording
        Close it (or use it as a context manager) when done.

    Raises
    ------
    InputDataError
        The file is missing, unreadable, truncated or its metadata is broken; the message names the file.
    ConfigError
        A required ``format`` / ``fs_hz`` is missing, or an explicit value contradicts the file.
    """
    p = Path(path)
    if fs_hz is not None and not (math.isfinite(fs_hz) and fs_hz > 0):
        raise ConfigError(f"fs_hz={fs_hz!r} is not valid: give a positive sample rate in Hz")
    name = p.name.lower()
    if name.endswith((".sigmf-meta", ".sigmf-data")):
        meta_path = p.with_name(p.name[: -len(".sigmf-meta")] + ".sigmf-meta")
        if not meta_path.exists() and name.endswith(".sigmf-data") and format is not None:
            return _open_raw(p, format, fs_hz, center_freq_hz)
        rec = _open_sigmf(meta_path)
    elif name.endswith(_ARCHIVE_SUFFIXES):
        rec = _open_sigmf_archive(p)
    else:
        magic = _peek(p, 4)
        if magic in (b"RIFF", b"RF64"):
            rec = _open_wav(p)
        elif format is None and name.endswith(tuple(_NAMED_FORMATS)):
            what = _NAMED_FORMATS[next(s for s in _NAMED_FORMATS if name.endswith(s))]
            raise InputDataError(p, f"not {what} (its first bytes are not {what}'s header)")
        else:
            return _open_raw(p, format, fs_hz, center_freq_hz)
    return _reconcile(rec, format, fs_hz, center_freq_hz)


# Extensions that name a file format: a file with one whose content is not that format is refused (named), not
# read as raw samples.
_NAMED_FORMATS = {".wav": "a WAV file", ".h5": "an HDF5 file", ".hdf5": "an HDF5 file"}


def _peek(p: Path, n: int) -> bytes:
    try:
        with open(p, "rb") as fh:
            return fh.read(n)
    except FileNotFoundError:
        raise InputDataError(p, "no such file") from None
    except IsADirectoryError:
        raise InputDataError(p, "is a directory, not a recording") from None
    except OSError as exc:
        raise InputDataError(p, f"cannot read: {exc.strerror or exc}") from None


def _file_size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        raise InputDataError(p, "no such file") from None
    except OSError as exc:
        raise InputDataError(p, f"cannot read: {exc.strerror or exc}") from None


def _reconcile(rec: Recording, format: str | None, fs_hz: float | None,
               center_freq_hz: float | None) -> Recording:
    """Fill values the file lacks from the caller, and refuse explicit values that contradict the file."""
    if format is not None and sigmf_datatype(format) != rec.datatype:
        raise ConfigError(f"format={format!r} contradicts {rec.path}, which stores {rec.datatype}")
    if fs_hz is not None:
        if math.isnan(rec.fs_hz):
            rec.fs_hz = float(fs_hz)
        elif not math.isclose(rec.fs_hz, fs_hz, rel_tol=1e-9):
            raise ConfigError(f"fs_hz={fs_hz:g} contradicts {rec.path}, "
                              f"whose sample rate is {rec.fs_hz:g} Hz")
    if math.isnan(rec.fs_hz):
        raise ConfigError(f"{rec.path} has no sample rate (core:sample_rate): give fs_hz (--fs-hz)")
    if center_freq_hz is not None:
        if rec.center_freq_hz is None:
            rec.center_freq_hz = float(center_freq_hz)
        elif not math.isclose(rec.center_freq_hz, center_freq_hz, rel_tol=1e-12):
            raise ConfigError(f"center_freq_hz={center_freq_hz:g} contradicts {rec.path}, "
                              f"whose centre frequency is {rec.center_freq_hz:g} Hz")
    return rec


def _open_raw(p: Path, format: str | None, fs_hz: float | None,
              center_freq_hz: float | None) -> Recording:
    missing = [n for n, v in (("format (--format cf32|ci16|cu8|ci8)", format), ("fs_hz (--fs-hz)", fs_hz))
               if v is None]
    if missing:
        _file_size(p)  # a missing file is reported as missing first
        raise ConfigError(f"{p} is a raw headerless recording: give {' and '.join(missing)}")
    assert format is not None and fs_hz is not None  # for the type checker; checked above
    datatype = sigmf_datatype(format)
    size = _file_size(p)
    meta = {"core:datatype": datatype, "core:sample_rate": float(fs_hz)}
    cap: dict[str, Any] = {"core:sample_start": 0}
    if center_freq_hz is not None:
        cap["core:frequency"] = float(center_freq_hz)
    return Recording(path=p, data_path=p, kind="raw", fs_hz=float(fs_hz), center_freq_hz=center_freq_hz,
                     datatype=datatype, data_offset=0, data_bytes=size, start_time=None, annotations=[],
                     captures=[cap], metadata=meta)


# -- SigMF ---------------------------------------------------------------------------------------------------


def _parse_datetime(text: Any, source: Path) -> _dt.datetime | None:
    if text is None:
        return None
    try:
        t = str(text).strip()
        if t.endswith(("Z", "z")):
            t = t[:-1] + "+00:00"
        # Python < 3.11 accepts at most 6 fractional digits
        if "." in t:
            head, frac = t.split(".", 1)
            digits = "".join(c for c in frac if c.isdigit())
            tz = frac[len(digits):]
            t = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
        when = _dt.datetime.fromisoformat(t)
    except ValueError:
        raise InputDataError(source, f"core:datetime {text!r} is not an ISO-8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc)


def _parse_sigmf_meta(text: str | bytes, source: Path) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputDataError(source, f"metadata is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("global"), dict):
        raise InputDataError(source, "metadata has no 'global' object (not a SigMF file?)")
    for key in ("captures", "annotations"):
        meta.setdefault(key, [])
        if not isinstance(meta[key], list) or not all(isinstance(x, dict) for x in meta[key]):
            raise InputDataError(source, f"metadata '{key}' is not a list of objects")
    return meta


def _sigmf_fields(meta: dict[str, Any], source: Path) -> dict[str, Any]:
    """Datatype, rate, centre frequency, start time and annotations of a parsed SigMF metadata object."""
    glob = meta["global"]
    datatype = glob.get("core:datatype")
    if datatype is None:
        raise InputDataError(source, "metadata has no core:datatype")
    if not isinstance(datatype, str):
        raise InputDataError(source, f"core:datatype {datatype!r} is not a string")
    if datatype not in _FORMATS:
        if datatype[:1] == "r":
            problem = f"datatype {datatype!r} is real-valued; lora-rffi reads complex I/Q recordings only"
        else:
            problem = (f"unknown or unsupported datatype {datatype!r} "
                       f"(supported: {', '.join(SIGMF_DATATYPES)})")
        raise InputDataError(source, problem)
    n_channels = glob.get("core:num_channels", 1)
    if n_channels != 1:
        raise InputDataError(source, f"core:num_channels={n_channels!r}: only single-channel recordings "
                                     "are read")
    if glob.get("core:metadata_only"):
        raise InputDataError(source, "core:metadata_only is true: the recording has no samples")
    for ext in glob.get("core:extensions", []) or []:
        if isinstance(ext, dict) and not ext.get("optional", True) and ext.get("name") not in (
                "lorarffi", "signal", "capture_details"):
            log.warning("%s: declares required extension %r which lora-rffi does not interpret; "
                        "reading the samples anyway", source, ext.get("name"))
    rate = glob.get("core:sample_rate")
    if rate is None:
        fs_hz = math.nan
    else:
        try:
            fs_hz = float(rate)
        except (TypeError, ValueError):
            raise InputDataError(source, f"core:sample_rate {rate!r} is not a number") from None
        if not (math.isfinite(fs_hz) and fs_hz > 0):
            raise InputDataError(source, f"core:sample_rate {rate!r} is not a positive rate")
    captures = sorted(meta["captures"], key=lambda c: c.get("core:sample_start", 0))
    header_bytes = sum(int(c.get("core:header_bytes", 0) or 0) for c in captures)
    if header_bytes and len(captures) > 1:
        raise InputDataError(source, "core:header_bytes in a multi-capture file is not supported")
    center = captures[0].get("core:frequency") if captures else None
    start_time = _parse_datetime(captures[0].get("core:datetime"), source) if captures else None
    annotations = sorted(meta["annotations"], key=lambda a: a.get("core:sample_start", 0))
    return {
        "datatype": datatype,
        "fs_hz": fs_hz,
        "center_freq_hz": None if center is None else float(center),
        "start_time": start_time,
        "captures": captures,
        "annotations": annotations,
        "metadata": glob,
        "header_bytes": header_bytes,
    }


def _open_sigmf(meta_path: Path) -> Recording:
    try:
        text = meta_path.read_bytes()
    except FileNotFoundError:
        raise InputDataError(meta_path, "no such file (a SigMF recording needs its .sigmf-meta)") from None
    except OSError as exc:
        raise InputDataError(meta_path, f"cannot read: {exc.strerror or exc}") from None
    fields = _sigmf_fields(_parse_sigmf_meta(text, meta_path), meta_path)
    dataset = fields["metadata"].get("core:dataset")
    data_path = (meta_path.parent / dataset) if dataset else meta_path.with_name(
        meta_path.name[: -len(".sigmf-meta")] + ".sigmf-data")
    size = _file_size(data_path)
    hb = fields["header_bytes"]
    if hb > size:
        raise InputDataError(data_path, f"core:header_bytes={hb} exceeds the file size {size}")
    return Recording(path=meta_path, data_path=data_path, kind="sigmf", fs_hz=fields["fs_hz"],
                     center_freq_hz=fields["center_freq_hz"], datatype=fields["datatype"], data_offset=hb,
                     data_bytes=size - hb, start_time=fields["start_time"], annotations=fields["annotations"],
                     captures=fields["captures"], metadata=fields["metadata"])


def _open_sigmf_archive(p: Path) -> Recording:
    _file_size(p)
    try:
        with tarfile.open(p) as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            metas = [m for m in members if m.name.endswith(".sigmf-meta")]
            if not metas:
                raise InputDataError(p, "archive holds no .sigmf-meta file")
            if len(metas) > 1:
                log.warning("%s: archive holds %d recordings; reading %s", p, len(metas), metas[0].name)
            meta_m = metas[0]
            fh = tar.extractfile(meta_m)
            text = fh.read() if fh is not None else b""
            data_name = meta_m.name[: -len(".sigmf-meta")] + ".sigmf-data"
            data_m = next((m for m in members if m.name == data_name), None)
            compressed = tar.fileobj is not None and not isinstance(tar.fileobj, io.BufferedReader)
    except tarfile.ReadError as exc:
        raise InputDataError(p, f"not a readable SigMF archive (tar): {exc}") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputDataError(p, f"damaged SigMF archive: {exc}") from None
    source = p
    fields = _sigmf_fields(_parse_sigmf_meta(text, source), source)
    if data_m is None:
        raise InputDataError(p, f"archive has no {data_name}")
    hb = fields["header_bytes"]
    if compressed:  # read through tarfile (seekable, slower); offsets relative to the member
        return Recording(path=p, data_path=p, kind="sigmf-archive", fs_hz=fields["fs_hz"],
                         center_freq_hz=fields["center_freq_hz"], datatype=fields["datatype"], data_offset=hb,
                         data_bytes=data_m.size - hb, start_time=fields["start_time"],
                         annotations=fields["annotations"], captures=fields["captures"],
                         metadata=fields["metadata"], tar_member=data_m.name)
    size = _file_size(p)
    avail = max(0, min(data_m.size, size - data_m.offset_data))
    if avail < data_m.size:
        log.warning("%s: archive is truncated: %s has %d of %d bytes", p, data_name, avail, data_m.size)
    return Recording(path=p, data_path=p, kind="sigmf-archive", fs_hz=fields["fs_hz"],
                     center_freq_hz=fields["center_freq_hz"], datatype=fields["datatype"],
                     data_offset=data_m.offset_data + hb, data_bytes=avail - hb,
                     start_time=fields["start_time"], annotations=fields["annotations"],
                     captures=fields["captures"], metadata=fields["metadata"])


# -- WAV -----------------------------------------------------------------------------------------------------

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def _open_wav(p: Path) -> Recording:
    size = _file_size(p)
    fmt: tuple[int, int, int, int] | None = None
    data_offset = data_bytes = None
    ds64_data_bytes = None
    auxi: bytes | None = None
    try:
        with open(p, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[8:12] != b"WAVE":
                raise InputDataError(p, "RIFF file is not a WAVE file")
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                ck_id, ck_size = struct.unpack("<4sI", fh.read(8))
                body = pos + 8
                if ck_id == b"ds64":
                    ds64_data_bytes = struct.unpack("<QQQ", fh.read(24))[1]
                elif ck_id == b"fmt ":
                    raw = fh.read(min(ck_size, 40))
                    if len(raw) < 16:
                        raise InputDataError(p, "WAV 'fmt ' chunk is too short")
                    tag, n_ch, rate, _, _, bits = struct.unpack("<HHIIHH", raw[:16])
                    if tag == _WAVE_FORMAT_EXTENSIBLE and len(raw) >= 26:
                        tag = struct.unpack("<H", raw[24:26])[0]  # first two bytes of the sub-format GUID
                    fmt = (tag, n_ch, rate, bits)
                elif ck_id == b"auxi":
                    auxi = fh.read(min(ck_size, 64))
                elif ck_id == b"data":
                    data_offset = body
                    data_bytes = ds64_data_bytes if (ck_size == 0xFFFFFFFF and ds64_data_bytes) else ck_size
                    if data_bytes in (0, 0xFFFFFFFF) or body + data_bytes > size:
                        # unfinished header (writer crashed or streams) or truncated file: use what is there
                        if body + data_bytes > size:
                            log.warning("%s: WAV data chunk declares %d bytes, %d present",
                                        p, data_bytes, size - body)
                        data_bytes = size - body
                    break
                pos = body + ck_size + (ck_size & 1)
    except OSError as exc:
        raise InputDataError(p, f"cannot read: {exc.strerror or exc}") from None
    except struct.error:
        raise InputDataError(p, "WAV header is truncated") from None
    if fmt is None:
        raise InputDataError(p, "WAV file has no 'fmt ' chunk")
    if data_offset is None:
        raise InputDataError(p, "WAV file has no 'data' chunk")
    tag, n_ch, rate, bits = fmt
    if n_ch != 2:
        raise InputDataError(p, f"WAV file has {n_ch} channel(s); an I/Q recording has exactly 2 (I, Q)")
    datatype = {(_WAVE_FORMAT_PCM, 8): "cu8", (_WAVE_FORMAT_PCM, 16): "ci16_le",
                (_WAVE_FORMAT_PCM, 32): "ci32_le", (_WAVE_FORMAT_IEEE_FLOAT, 32): "cf32_le",
                (_WAVE_FORMAT_IEEE_FLOAT, 64): "cf64_le"}.get((tag, bits))
    if datatype is None:
        raise InputDataError(p, f"WAV sample format tag 0x{tag:04x} with {bits} bits is not supported "
                                "(use 8-bit unsigned, 16/32-bit integer or 32/64-bit float)")
    if rate <= 0:
        raise InputDataError(p, f"WAV sample rate {rate} is not valid")
    center, start_time = _parse_auxi(auxi) if auxi else (None, None)
    meta: dict[str, Any] = {"core:datatype": datatype, "core:sample_rate": float(rate)}
    cap: dict[str, Any] = {"core:sample_start": 0}
    if center is not None:
        cap["core:frequency"] = center
    if start_time is not None:
        cap["core:datetime"] = start_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return Recording(path=p, data_path=p, kind="wav", fs_hz=float(rate), center_freq_hz=center,
                     datatype=datatype, data_offset=data_offset, data_bytes=data_bytes, start_time=start_time,
                     annotations=[], captures=[cap], metadata=meta)


def _parse_auxi(raw: bytes) -> tuple[float | None, _dt.datetime | None]:
    """Centre frequency and start time of an SDR#/HDSDR ``auxi`` chunk (SYSTEMTIME start, stop, CenterFreq).

    The start time is taken as UTC (the programs write the PC clock's time).
    """
    if len(raw) < 36:
        return None, None
    year, month, _, day, hour, minute, second, ms = struct.unpack("<8H", raw[:16])
    center = struct.unpack("<I", raw[32:36])[0]
    start_time = None
    if 1990 <= year <= 2200:
        try:
            start_time = _dt.datetime(year, month, day, hour, minute, second, ms * 1000,
                                      tzinfo=_dt.timezone.utc)
        except ValueError:
            start_time = None
    return (float(center) if center > 0 else None), start_time
