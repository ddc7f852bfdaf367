"""Write SigMF recordings: whole arrays (:func:`write_sigmf`) or a live stream (:class:`SigMFRecorder`).

Metadata is built and validated with the ``sigmf`` package (literal ``"core:..."`` keys, which every version
of sigmf-python accepts) and written by us, atomically (temporary file + rename), so neither the package's
``tofile`` overwrite rules nor its archive API changes matter. Read recordings back with
:func:`lorarffi.datasets.recording.open_recording`.

Packets are annotations: ``core:sample_start``, ``core:sample_count``, ``core:label`` (the device label) and
our own declared extension namespace ``lorarffi`` (``lorarffi:device_id``, ``lorarffi:cfo_hz``,
``lorarffi:snr_db`` per annotation; ``lorarffi:sf``, ``lorarffi:bw_hz``, ``lorarffi:preamble_symbols``,
``lorarffi:sync_word``, ``lorarffi:software_version`` in the global object), see ``docs/dataset-format.md``.

Samples are stored as ``cf32_le`` (exact), ``ci16_le`` (``round(x * 32768)``, read back as ``q / 32768``) or
``cu8`` (``round(x * 127.5 + 127.5)``, read back as ``(q - 127.5) / 127.5``); values beyond full scale are
clipped and counted.
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
import math
import os
import tarfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from lorarffi import __version__
from lorarffi.datasets.atomic import write_atomic
from lorarffi.datasets.handles import Closeable
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError, InputDataError

__all__ = [
    "WriteDatatype",
    "EXTENSION",
    "write_sigmf",
    "SigMFRecorder",
    "quantize",
    "sigmf_paths",
    "make_annotation",
]

log = logging.getLogger(__name__)

WriteDatatype = Literal["cf32_le", "ci16_le", "cu8"]
_WRITE_DATATYPES: tuple[str, ...] = get_args(WriteDatatype)
#: Our SigMF extension namespace, declared in ``core:extensions`` of every recording we write.
EXTENSION = {"name": "lorarffi", "version": "1.0.0", "optional": True}
_SHORT_KEYS = {"start": "core:sample_start", "count": "core:sample_count", "label": "core:label",
               "comment": "core:comment", "freq_lower_edge_hz": "core:freq_lower_edge",
               "freq_upper_edge_hz": "core:freq_upper_edge"}


def sigmf_paths(path: str | os.PathLike[str]) -> tuple[Path, Path, str]:
    """``(meta_path, data_path, base_name)`` for ``NAME``, ``NAME.sigmf-meta``/``-data`` or ``NAME.sigmf``."""
    p = Path(path)
    name = p.name
    for ext in (".sigmf-meta", ".sigmf-data", ".sigmf"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    if not name:
        raise ConfigError(f"path={str(path)!r} has no file name before the SigMF extension")
    return p.with_name(name + ".sigmf-meta"), p.with_name(name + ".sigmf-data"), name


def _check_datatype(datatype: str) -> str:
    if datatype not in _WRITE_DATATYPES:
        raise ConfigError(f"datatype={datatype!r} is not valid for writing: use one of "
                          f"{list(_WRITE_DATATYPES)}")
    return datatype


def quantize(iq: npt.ArrayLike, datatype: WriteDatatype) -> tuple[np.ndarray, int]:
    """Convert complex samples to the interleaved storage of ``datatype``.

    Parameters
    ----------
    iq : array_like of complex, shape (n,)
        Samples, full scale +-1 for the integer types.
    datatype : {"cf32_le", "ci16_le", "cu8"}

    Returns
    -------
    raw : ndarray, shape (2n,)
        Interleaved I/Q components, little-endian, ready for ``tofile``.
    n_clipped : int
        Components beyond full scale that were clipped (always 0 for cf32_le).
    """
    x = np.asarray(iq).reshape(-1)
    comps = np.empty(2 * x.size, dtype=np.float32 if datatype == "cf32_le" else np.float64)
    comps[0::2] = x.real
    comps[1::2] = x.imag
    if datatype == "cf32_le":
        return comps.astype("<f4", copy=False), 0
    if datatype == "ci16_le":
        q = np.round(comps * 32768.0)
        lo, hi = -32768, 32767
        out_dtype = "<i2"
    else:
        q = np.round(comps * 127.5 + 127.5)
        lo, hi = 0, 255
        out_dtype = "u1"
    n_clipped = int(np.count_nonzero((q < lo) | (q > hi)))
    return np.clip(q, lo, hi).astype(out_dtype), n_clipped


def _json_value(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_json_value(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    return v


def make_annotation(
    start: int, count: int | None = None, *, label: str | None = None, device_id: int | None = None,
    cfo_hz: float | None = None, snr_db: float | None = None, comment: str | None = None, **extra: Any
) -> dict[str, Any]:
    """One SigMF annotation for a packet.

    Parameters
    ----------
    start : int
        First sample of the packet (``core:sample_start``), relative to the start of the recording.
    count : int, optional
        Packet length in samples (``core:sample_count``).
    label : str, optional
        ``core:label``, e.g. ``"device 7"``; defaults to ``"device {device_id}"`` when ``device_id`` is given.
    device_id : int, optional
        ``lorarffi:device_id``.
    cfo_hz, snr_db : float, optional
        ``lorarffi:cfo_hz`` and ``lorarffi:snr_db`` (NaN is left out).
    comment : str, optional
        ``core:comment``.
    **extra
        More fields: a key with a ``:`` is used as is (``"signal:detail"``), others become ``lorarffi:<key>``.
    """
    if int(start) < 0:
        raise ConfigError(f"start={start} is not valid: annotations start at sample 0 or later")
    ann: dict[str, Any] = {"core:sample_start": int(start)}
    if count is not None:
        if int(count) < 0:
            raise ConfigError(f"count={count} is not valid: use 0 or more samples")
        ann["core:sample_count"] = int(count)
    if label is None and device_id is not None:
        label = f"device {int(device_id)}"
    if label is not None:
        ann["core:label"] = str(label)
    if comment is not None:
        ann["core:comment"] = str(comment)
    if device_id is not None:
        ann["lorarffi:device_id"] = int(device_id)
    for key, value in (("cfo_hz", cfo_hz), ("snr_db", snr_db)):
        if value is not None and math.isfinite(float(value)):
            ann[f"lorarffi:{key}"] = float(value)
    for key, value in extra.items():
        if value is None:
            continue
        ann[key if ":" in key else f"lorarffi:{key}"] = _json_value(value)
    return ann


def _annotation_from_mapping(a: Mapping[str, Any]) -> dict[str, Any]:
    """Accept an annotation with ``core:`` keys or the short keyword names of :func:`make_annotation`."""
    if "core:sample_start" in a:
        return {str(k): _json_value(v) for k, v in a.items()}
    short = dict(a)
    if "start" not in short:
        raise ConfigError(f"annotation {dict(a)!r} has no 'start' (or 'core:sample_start')")
    return make_annotation(short.pop("start"), short.pop("count", None), **short)


def _format_datetime(when: Any) -> str | None:
    """ISO-8601 UTC with a ``Z`` for a datetime, Unix seconds or ISO string."""
    if when is None:
        return None
    if isinstance(when, str):
        return when
    if isinstance(when, (int, float)):
        when = _dt.datetime.fromtimestamp(float(when), tz=_dt.timezone.utc)
    if not isinstance(when, _dt.datetime):
        raise ConfigError(f"datetime={when!r} is not valid: give a datetime, Unix seconds or an ISO-8601 "
                          "string")
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _global_info(datatype: str, fs_hz: float, *, description: str | None, hw: str | None,
                 cfg: LoRaConfig | None, author: str | None) -> dict[str, Any]:
    if not (math.isfinite(fs_hz) and fs_hz > 0):
        raise ConfigError(f"fs_hz={fs_hz!r} is not valid: give a positive sample rate in Hz")
    g: dict[str, Any] = {
        "core:datatype": datatype,
        "core:sample_rate": float(fs_hz),
        "core:version": _sigmf_spec_version(),
        "core:num_channels": 1,
        "core:recorder": f"lora-rffi {__version__}",
        "core:extensions": [dict(EXTENSION)],
        "lorarffi:software_version": __version__,
    }
    if description:
        g["core:description"] = description
    if hw:
        g["core:hw"] = hw
    if author:
        g["core:author"] = author
    if cfg is not None:
        g.update({"lorarffi:sf": cfg.sf, "lorarffi:bw_hz": cfg.bw_hz, "lorarffi:preamble_symbols":
                  cfg.preamble_symbols, "lorarffi:sync_word": cfg.sync_word})
    return g


def _sigmf_spec_version() -> str:
    try:
        import sigmf

        return str(getattr(sigmf, "__specification__", "1.2.0"))
    except ImportError:  # pragma: no cover - sigmf is a dependency
        return "1.2.0"


def _capture(center_freq_hz: float | None, datetime: Any) -> dict[str, Any]:
    cap: dict[str, Any] = {"core:sample_start": 0}
    if center_freq_hz is not None:
        cap["core:frequency"] = float(center_freq_hz)
    iso = _format_datetime(datetime)
    if iso is not None:
        cap["core:datetime"] = iso
    return cap


def _metadata_json(glob: dict[str, Any], captures: list[dict[str, Any]], annotations: list[dict[str, Any]],
                   *, validate: bool = True) -> str:
    """Serialise (and validate with the sigmf package) one metadata object."""
    from sigmf.sigmffile import SigMFFile

    meta = {"global": glob, "captures": captures,
            "annotations": sorted(annotations, key=lambda a: a["core:sample_start"])}
    smf = SigMFFile(metadata=meta)
    if validate:
        try:
            smf.validate()
        except Exception as exc:  # jsonschema / sigmf errors differ between versions
            raise ConfigError(f"the SigMF metadata is not valid: {exc}") from None
    return smf.dumps(pretty=True) + "\n"


# -- whole recordings ----------------------------------------------------------------------------------------


def write_sigmf(
    path_meta: str | os.PathLike[str],
    iq: npt.ArrayLike,
    fs_hz: float,
    *,
    center_freq_hz: float | None = None,
    datetime: Any = None,
    datatype: WriteDatatype = "cf32_le",
    annotations: Iterable[Mapping[str, Any]] = (),
    description: str = "",
    hw: str = "",
    author: str = "",
    cfg: LoRaConfig | None = None,
    archive: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write an IQ array as a SigMF recording.

    Parameters
    ----------
    path_meta : path-like
        ``NAME.sigmf-meta`` (or ``NAME``, ``NAME.sigmf-data``, ``NAME.sigmf``); the pair is written beside it,
        or one ``NAME.sigmf`` tar archive when ``archive`` is true.
    iq : array_like of complex, shape (n,)
        Samples; full scale +-1 for the integer datatypes.
    fs_hz : float
        Sample rate in Hz.
    center_freq_hz : float, optional
        Capture ``core:frequency``.
    datetime : datetime, float or str, optional
        Time of the first sample: an aware datetime (naive is taken as UTC), Unix seconds or ISO-8601.
    datatype : {"cf32_le", "ci16_le", "cu8"}
    annotations : iterable of dict
        Packets: dicts with ``core:`` keys, or with the keywords of :func:`make_annotation`
        (``start``, ``count``, ``label``, ``device_id``, ``cfo_hz``, ``snr_db``, ...).
    description, hw, author : str
        ``core:description``, ``core:hw``, ``core:author``.
    cfg : LoRaConfig, optional
        Stored as ``lorarffi:sf`` etc. in the global object.
    archive : bool
        Write a ``NAME.sigmf`` archive instead of the pair.
    overwrite : bool
        Replace existing files (default: refuse).

    Returns
    -------
    path : Path
        The ``.sigmf-meta`` file written, or the archive.
    """
    from sigmf.sigmffile import SigMFFile

    datatype = _check_datatype(datatype)
    x = np.asarray(iq)
    if x.ndim != 1:
        raise ConfigError(f"iq has shape {x.shape}, expected (n,) samples of one channel")
    if x.dtype.kind not in "fciu":
        raise ConfigError(f"iq has dtype {x.dtype}, expected complex samples")
    meta_path, data_path, name = sigmf_paths(path_meta)
    out = meta_path.with_name(name + ".sigmf") if archive else meta_path
    targets = [out] if archive else [meta_path, data_path]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{', '.join(existing)} exists: choose another name or replace it (--overwrite; "
                          "overwrite=True from Python)")
    raw, n_clipped = quantize(x, datatype)
    if n_clipped:
        log.warning("%s: %d of %d components beyond full scale clipped to %s range", out, n_clipped, raw.size,
                    datatype)
    glob = _global_info(datatype, float(fs_hz), description=description, hw=hw, cfg=cfg, author=author)
    anns = [_annotation_from_mapping(a) for a in annotations]
    for a in anns:
        if a["core:sample_start"] > x.size:
            raise ConfigError(f"annotation at sample {a['core:sample_start']} is past the end "
                              f"({x.size} samples)")
    data_bytes = raw.tobytes()
    smf = SigMFFile(metadata={"global": glob, "captures": [], "annotations": []})
    smf.set_data_file(data_buffer=io.BytesIO(data_bytes), skip_checksum=False)  # core:sha512 of the data
    glob = smf.get_global_info()
    text = _metadata_json(glob, [_capture(center_freq_hz, datetime)], anns)
    if archive:
        _write_archive(out, name, text, data_bytes)
    else:
        write_atomic(data_path, data_bytes)
        write_atomic(meta_path, text)
    return out


def _write_archive(out: Path, name: str, meta_text: str, data_bytes: bytes) -> None:
    """A SigMF archive: a POSIX tar holding ``NAME/NAME.sigmf-meta`` and ``NAME/NAME.sigmf-data``."""
    buf = io.BytesIO()
    now = time.time()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member, payload in ((f"{name}/{name}.sigmf-meta", meta_text.encode()),
                                (f"{name}/{name}.sigmf-data", data_bytes)):
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            info.mtime = int(now)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(payload))
    write_atomic(out, buf.getvalue())


# -- incremental recorder ------------------------------------------------------------------------------------


class SigMFRecorder(Closeable):
    """Record a stream to ``NAME.sigmf-data`` + ``NAME.sigmf-meta``, block by block, with packet annotations.

    Parameters
    ----------
    path : path-like
        ``NAME.sigmf-meta`` (or ``NAME``, ``NAME.sigmf-data``).
    fs_hz : float
        Sample rate in Hz.
    center_freq_hz : float, optional
        Capture ``core:frequency``.
    cfg : LoRaConfig, optional
        LoRa parameters stored in the global object (``lorarffi:sf``...).
    start_time : datetime, float or str, optional
        Time of the first sample (capture ``core:datetime``).
    datatype : {"cf32_le", "ci16_le", "cu8"}
    description, hw, author : str
        ``core:description``, ``core:hw``, ``core:author``.
    meta_interval_s : float
        Rewrite the metadata at most this often while annotations arrive (0: after every change); it is
        always rewritten by :meth:`flush` and :meth:`close`.
    overwrite : bool
        Replace an existing recording (default: refuse).

    Notes
    -----
    Each :meth:`append` writes its block and flushes it to the operating system, so a crash of the process
    loses at most the block being written; the metadata (valid from the start, without ``core:sha512``) is
    replaced atomically, so it is never half written. Gaps in the stream are the caller's to fill.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fs_hz: float,
        center_freq_hz: float | None = None,
        cfg: LoRaConfig | None = None,
        start_time: Any = None,
        datatype: WriteDatatype = "cf32_le",
        description: str = "",
        hw: str = "",
        author: str = "",
        meta_interval_s: float = 1.0,
        overwrite: bool = False,
    ) -> None:
        self.datatype = _check_datatype(datatype)
        self.meta_path, self.data_path, _ = sigmf_paths(path)
        existing = [str(t) for t in (self.meta_path, self.data_path) if t.exists()]
        if existing and not overwrite:
            raise ConfigError(f"{', '.join(existing)} exists: choose another name or replace it "
                              "(--overwrite; overwrite=True from Python)")
        self.fs_hz = float(fs_hz)
        self._global = _global_info(self.datatype, self.fs_hz, description=description, hw=hw, cfg=cfg,
                                    author=author)
        self._captures = [_capture(center_freq_hz, start_time)]
        self._annotations: list[dict[str, Any]] = []
        self._meta_interval_s = float(meta_interval_s)
        self._dirty = True
        self._last_meta = -math.inf
        self.n_samples = 0
        self.n_clipped = 0
        _metadata_json(dict(self._global), self._captures, [], validate=True)  # refuse bad metadata early
        try:
            self._fh = open(self.data_path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise InputDataError(self.data_path, f"cannot create: {exc.strerror or exc}") from None
        self._write_meta()

    @property
    def annotations(self) -> list[dict[str, Any]]:
        """Annotations added so far (copies)."""
        return [dict(a) for a in self._annotations]

    def append(self, iq: npt.ArrayLike) -> int:
        """Write a block of samples and flush it.

        Parameters
        ----------
        iq : array_like of complex, shape (n,)

        Returns
        -------
        n_samples : int
            Samples in the recording after this block.
        """
        if self._fh is None:
            raise ConfigError(f"SigMFRecorder for {self.meta_path} is closed")
        x = np.asarray(iq)
        if x.ndim != 1:
            raise ConfigError(f"iq has shape {x.shape}, expected (n,) samples")
        raw, n_clipped = quantize(x, self.datatype)  # type: ignore[arg-type]
        if n_clipped and not self.n_clipped:
            log.warning("%s: samples beyond full scale are clipped to the %s range (counted in n_clipped)",
                        self.data_path, self.datatype)
        self.n_clipped += n_clipped
        try:
            self._fh.write(raw.tobytes())
            self._fh.flush()
        except OSError as exc:
            raise InputDataError(self.data_path, f"write failed: {exc.strerror or exc}") from None
        self.n_samples += x.size
        self._maybe_write_meta()
        return self.n_samples

    def add_annotation(
        self, start: int, count: int | None = None, *, label: str | None = None, device_id: int | None = None,
        cfo_hz: float | None = None, snr_db: float | None = None, comment: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Annotate a packet (see :func:`make_annotation`); ``start`` counts from the first sample written."""
        if self._fh is None:
            raise ConfigError(f"SigMFRecorder for {self.meta_path} is closed")
        ann = make_annotation(start, count, label=label, device_id=device_id, cfo_hz=cfo_hz, snr_db=snr_db,
                              comment=comment, **extra)
        self._annotations.append(ann)
        self._dirty = True
        self._maybe_write_meta()
        return ann

    def _maybe_write_meta(self) -> None:
        if self._dirty and time.monotonic() - self._last_meta >= self._meta_interval_s:
            self._write_meta()

    def _write_meta(self) -> None:
        text = _metadata_json(dict(self._global), self._captures, self._annotations, validate=False)
        try:
            write_atomic(self.meta_path, text)
        except OSError as exc:
            raise InputDataError(self.meta_path, f"cannot write: {exc.strerror or exc}") from None
        self._dirty = False
        self._last_meta = time.monotonic()

    def flush(self) -> None:
        """Flush the samples and rewrite the metadata now."""
        if self._fh is not None:
            self._fh.flush()
            self._write_meta()

    def close(self) -> None:
        """Flush, write the final metadata and close (idempotent)."""
        if self._fh is None:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()
            self._fh = None
        self._write_meta()
