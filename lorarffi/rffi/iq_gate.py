"""The IQ gate: a packet accepted as a device must carry that device's IQ image and carrier leakage.

Each enrolled device keeps the mean and spread of its enrollment packets' image and leakage
(:func:`~lorarffi.dsp.impairment.tx_impairments`, relative to the chirp). A packet's distance to a device is

``z = sqrt(|image - image_mean|^2 / (image_se^2 + image_std^2) + |leakage - leakage_mean|^2 / (leakage_se^2 +
leakage_std^2))``

in standard errors: the packet's own (from its fit's residual: wider in noise and multipath) and the device's
enrollment spread, added in quadrature. The gate passes ``z <= tolerance`` (:data:`DEFAULT_IQ_TOLERANCE`: 5).
Like the CFO gate it never accepts what the embedding score rejects; it rejects a packet whose fingerprint
passes but whose transmitter's imbalance or leakage is another's, such as a transmitter of the same chip model
tuned to an enrolled device's carrier. A packet not measured (NaN) or a device enrolled without these
statistics passes.

What it costs and gains on the simulated fleets (benchmarks/bench_open_set.py, docs/benchmarks.md): the
tolerance trades rogues caught against enrolled packets whose fit a channel the enrollment never saw moves
beyond its residual (what the fit's model of the channel's response leaves out); the benchmark lists both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.impairment import TxImpairments
from lorarffi.errors import ConfigError

__all__ = ["DEFAULT_IQ_TOLERANCE", "IqStatistics", "IqGate", "iq_statistics", "pooled"]

DEFAULT_IQ_TOLERANCE = 5.0
"""Standard errors a packet's image and leakage may lie from its device's enrollment mean."""


@dataclass(frozen=True)
class IqStatistics:
    """A device's enrollment image and leakage: complex means and spreads, all None when not measured.

    A spread (``*_std``) is how far a new measurement may lie from the mean beyond its own noise: the root
    mean squared distance of the enrollment packets to their mean, and the mean's own standard error added in
    quadrature (which is all there is for a device enrolled from one packet)."""

    iq_image_re: float | None = None
    iq_image_im: float | None = None
    iq_image_std: float | None = None
    iq_leakage_re: float | None = None
    iq_leakage_im: float | None = None
    iq_leakage_std: float | None = None


def iq_statistics(measured: TxImpairments | None) -> IqStatistics:
    """The statistics of one device's enrollment packets (those measured; none measured: all None)."""
    if measured is None:
        return IqStatistics()
    ok = np.isfinite(measured.image) & np.isfinite(measured.leakage)
    if not ok.any():
        return IqStatistics()
    n = int(ok.sum())

    def mean_and_spread(value, se) -> tuple[float, float, float]:
        m = value.mean()
        spread2 = np.mean(np.abs(value - m) ** 2) + np.mean(se**2) / n
        return float(m.real), float(m.imag), float(np.sqrt(spread2))

    return IqStatistics(
        *mean_and_spread(measured.image[ok], measured.image_se[ok]),
        *mean_and_spread(measured.leakage[ok], measured.leakage_se[ok]),
    )


def pooled(measured: TxImpairments, members: npt.NDArray[np.int64]) -> TxImpairments:
    """Each group's measurement (G,) from its members' (``members``: (G, M) packet positions): the
    inverse-variance weighted mean of the members measured, and its standard error."""
    out = TxImpairments.unknown(members.shape[0])
    for name, se_name in (("image", "image_se"), ("leakage", "leakage_se")):
        value, se = getattr(measured, name)[members], getattr(measured, se_name)[members]
        ok = np.isfinite(value) & np.isfinite(se) & (se > 0)
        w = np.where(ok, 1.0 / np.where(ok, se, 1.0) ** 2, 0.0)
        total = w.sum(axis=1)
        has = total > 0
        mean = np.sum(w * np.where(ok, value, 0), axis=1) / np.where(has, total, 1.0)
        getattr(out, name)[has] = mean[has]
        getattr(out, se_name)[has] = 1.0 / np.sqrt(total[has])
    return out


class IqGate:
    """The enrolled devices' image and leakage statistics, ready to check packets (module docstring).

    Parameters
    ----------
    device_ids : array_like of int, shape (G,)
        Devices with statistics, ascending.
    statistics : sequence of IqStatistics, length G
        Their statistics (every field set).
    tolerance : float
        Standard errors a packet may lie from its device.
    """

    def __init__(self, device_ids: npt.ArrayLike, statistics: list[IqStatistics], *,
                 tolerance: float = DEFAULT_IQ_TOLERANCE) -> None:
        self.device_ids = np.asarray(device_ids, np.int64).reshape(-1)
        if self.device_ids.size != len(statistics):
            raise ConfigError(f"{self.device_ids.size} device ids for {len(statistics)} IQ statistics")
        if not np.all(np.diff(self.device_ids) > 0):
            raise ConfigError("the IQ gate's device ids must be ascending and distinct")
        if not (np.isfinite(tolerance) and tolerance > 0):
            raise ConfigError(f"IQ gate tolerance {tolerance!r} is not valid: use a positive number")
        self.tolerance = float(tolerance)
        self.image_mean = np.array([complex(s.iq_image_re, s.iq_image_im) for s in statistics], np.complex128)
        self.leakage_mean = np.array(
            [complex(s.iq_leakage_re, s.iq_leakage_im) for s in statistics], np.complex128)
        self.image_std = np.array([s.iq_image_std for s in statistics], np.float64)
        self.leakage_std = np.array([s.iq_leakage_std for s in statistics], np.float64)

    def distance(self, measured: TxImpairments, gate_pos: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """(N,) each packet's distance z to device ``gate_pos`` (a position in :attr:`device_ids`), in
        standard errors; NaN where either is unknown (``gate_pos`` -1 or the packet not measured)."""
        g = np.asarray(gate_pos, np.int64).reshape(-1)
        if g.size != len(measured):
            raise ConfigError(f"{len(measured)} IQ measurements for {g.size} packets")
        gg = np.maximum(g, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            z2 = np.abs(measured.image - self.image_mean[gg]) ** 2 / (
                measured.image_se**2 + self.image_std[gg] ** 2
            ) + np.abs(measured.leakage - self.leakage_mean[gg]) ** 2 / (
                measured.leakage_se**2 + self.leakage_std[gg] ** 2
            )
        return np.where(g >= 0, np.sqrt(z2), np.nan)

    def passes(self, z: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """(N,) True where ``z`` is within the tolerance or unknown (NaN)."""
        return ~(z > self.tolerance)
