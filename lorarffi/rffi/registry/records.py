"""The typed rows a registry hands out and takes in: an enrolled device, an audit-log entry, the operating
threshold, and the CFO statistics of an enrollment.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError

__all__ = [
    "DeviceRecord",
    "AuditRow",
    "Threshold",
    "CfoStatistics",
    "cfo_statistics",
    "utc_now",
    "as_utc",
    "optional_float",
]


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


class _Record:
    """What every record shares: :meth:`to_dict`."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields by name, datetimes in ISO 8601."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}


def as_utc(t: datetime) -> datetime:
    """``t`` as an aware UTC datetime (a naive one, as SQLite gives back, is taken to be UTC already)."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


@dataclass(frozen=True, slots=True)
class DeviceRecord(_Record):
    """One enrolled device.

    Attributes
    ----------
    device_id : int
        The id the operator gave the device (the registry's primary key).
    name : str or None
        A label for people.
    enrolled_at : datetime
        When the device was last enrolled, aware, UTC.
    n_packets : int
        Packets its enrollment used.
    n_embeddings : int
        Reference embeddings stored for it.
    cfo_mean_hz, cfo_std_hz, cfo_min_hz, cfo_max_hz : float or None
        CFO statistics of the enrollment packets in Hz (population standard deviation); None when the
        enrollment gave no CFO.
    carrier_hz : float or None
        Carrier frequency the device was enrolled on, in Hz.
    notes : str or None
        Free text.
    iq_image_re, iq_image_im, iq_image_std, iq_leakage_re, iq_leakage_im, iq_leakage_std : float or None
        The enrollment packets' IQ image and carrier leakage relative to the chirp: complex mean (real and
        imaginary part) and spread (:class:`~lorarffi.rffi.iq_gate.IqStatistics`); None when not measured.
    iq_fit : str or None
        The fit that measured them (:func:`~lorarffi.dsp.impairment.iq_fit_name`); None when not measured.
    """

    device_id: int
    name: str | None
    enrolled_at: datetime
    n_packets: int
    n_embeddings: int
    cfo_mean_hz: float | None
    cfo_std_hz: float | None
    cfo_min_hz: float | None
    cfo_max_hz: float | None
    carrier_hz: float | None
    notes: str | None
    iq_image_re: float | None = None
    iq_image_im: float | None = None
    iq_image_std: float | None = None
    iq_leakage_re: float | None = None
    iq_leakage_im: float | None = None
    iq_leakage_std: float | None = None
    iq_fit: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRow(_Record):
    """One decision in the append-only audit log.

    Attributes
    ----------
    verdict : str
        What was decided (e.g. ``"accept"``, ``"rogue"``).
    device_id : int or None
        The enrolled device decided on; None when none was.
    score : float or None
        The decision's score (e.g. the distance to the enrolled embeddings).
    source : str
        Where the packet came from (file, radio, stream).
    start_sample : int or None
        Absolute sample index of the packet's first preamble sample in ``source``.
    cfo_hz, snr_db : float or None
        The detector's CFO estimate (Hz) and SNR (dB).
    time_utc : datetime or None
        When the decision was made; None: the time it is appended.
    model_fingerprint : str or None
        The model that made the decision; None: the registry's model.
    audit_id : int or None
        The row's id in the log (set on rows read back, ignored on append).
    packet_key : str or None
        Names the packet decided on when it must be logged once (unique in the log; a row whose key is
        already there is not appended again). None: no such constraint.
    """

    verdict: str
    device_id: int | None = None
    score: float | None = None
    source: str = ""
    start_sample: int | None = None
    cfo_hz: float | None = None
    snr_db: float | None = None
    time_utc: datetime | None = None
    model_fingerprint: str | None = None
    audit_id: int | None = None
    packet_key: str | None = None


@dataclass(frozen=True, slots=True)
class Threshold(_Record):
    """The operating threshold of the authenticator and how it was chosen.

    Attributes
    ----------
    value : float
        The score threshold.
    far : float
        False-accept rate it was chosen for, 0 to 1.
    method : str
        How it was chosen (e.g. ``"leave-one-out enrollment packets"``).
    k : int or None
        Neighbours of the K-NN score it applies to.
    set_at : datetime
        When it was stored, aware, UTC.
    score : str or None
        The score it applies to (:data:`lorarffi.rffi.knn.SCORES`; None: stored before scores had names,
        the ``"knn"`` score).
    """

    value: float
    far: float
    method: str
    k: int | None
    set_at: datetime
    score: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Threshold:
        return cls(
            value=float(d["value"]),
            far=float(d["far"]),
            method=str(d["method"]),
            k=None if d.get("k") is None else int(d["k"]),
            set_at=as_utc(datetime.fromisoformat(d["set_at"])),
            score=None if d.get("score") is None else str(d["score"]),
        )


@dataclass(frozen=True, slots=True)
class CfoStatistics:
    """Mean, population standard deviation, minimum and maximum of enrollment CFOs, in Hz (None: unknown)."""

    cfo_mean_hz: float | None = None
    cfo_std_hz: float | None = None
    cfo_min_hz: float | None = None
    cfo_max_hz: float | None = None


def cfo_statistics(cfo_hz: npt.ArrayLike | None) -> CfoStatistics:
    """CFO statistics of a device's enrollment packets.

    Parameters
    ----------
    cfo_hz : array_like of float, shape (N,), or None
        CFO estimate of every enrollment packet, in Hz; None or empty gives unknown statistics.

    Returns
    -------
    CfoStatistics
        The standard deviation is the population one (``ddof=0``), as the CFO gate fits it.
    """
    if cfo_hz is None:
        return CfoStatistics()
    cfo = np.asarray(cfo_hz, dtype=np.float64).reshape(-1)
    if cfo.size == 0:
        return CfoStatistics()
    if not np.all(np.isfinite(cfo)):
        raise ConfigError(
            f"cfo_hz holds {int(np.sum(~np.isfinite(cfo)))} non-finite values; all must be finite"
        )
    return CfoStatistics(float(cfo.mean()), float(cfo.std()), float(cfo.min()), float(cfo.max()))


def optional_float(x: Any, name: str) -> float | None:
    """``x`` as a Python float, None for None or NaN; infinities are refused."""
    if x is None:
        return None
    v = float(x)
    if math.isnan(v):
        return None
    if math.isinf(v):
        raise ConfigError(f"{name}={v} must be finite")
    return v
