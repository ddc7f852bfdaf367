"""The CFO-gated hybrid classifier (Shen et al. 2021, Algorithm 1, improved) and its drift tracking.

Units
-----
An oscillator's error scales with the carrier, so the gate's tolerances are stated in ppm of the carrier
(``GateParams.carrier_hz``; :data:`DEFAULT_CARRIER_HZ` when unknown) and applied in Hz:
``offset_hz = ppm * carrier_hz / 1e6`` (:func:`ppm_to_hz`). Each tolerance may also be given in Hz.

The rule
--------
From the training packets each device ``k`` gets CFO statistics: mean ``mu_k``, standard deviation
``sigma_k``, minimum and maximum. Its gate half-width is

    lambda_k = max(k_sigma * sigma_k, max_k - mu_k, mu_k - min_k) + margin

i.e. the device's whole training range (warm-up drift included), widened by a margin for what the training
day cannot show: day-to-day shifts (real devices: up to about 0.4 ppm) and a change of environment (real
crystal devices: steps of 1.5-1.8 ppm). The default margin, 2.5 ppm, keeps a device through a 2 ppm step.
A packet with CFO estimate ``f`` rules out every device with ``|f - c_k| > lambda_k``, where ``c_k`` is the
device's centre (``mu_k`` until tracking moves it). The CNN's probabilities of the remaining devices are
renormalised to sum to one and the best one is predicted; when every device is ruled out the packet is
rejected as ``unknown`` (never silently assigned).

CFO weighting (on by default)
-----------------------------
Algorithm 1 uses the CFO only to rule devices out. With ``cfo_weighting`` the remaining devices'
probabilities are also weighted by how well the CFO fits each of them:

    p_k  proportional to  p_cnn,k * (exp(-(f - c_k)**2 / (2 * s_k**2)) + floor)
    s_k**2 = sigma_k**2 + d**2

``sigma_k`` is the larger of the training and the tracked spread, ``d`` the drift allowance
(``cfo_weight_std_ppm``, default 0.1 ppm: most real devices move less from day to day) and ``floor``
(``cfo_weight_floor``, default 0.05) the weight of a CFO that fits the device no more. The floor is what
makes the CFO stop being evidence when it should: the CFO can move a decision by at most
``log(1 + 1 / floor)`` (3 nats), so a confident CNN is not overruled by a device that has jumped onto
another one's CFO, and a CFO that fits no device leaves the CNN's ranking as it is. Where several devices
sit within the CFO resolution (TCXO devices near 0) the Gaussian terms are alike and the CFO adds little
either way. Floor 0 gives the plain Gaussian; ruled-out devices stay ruled out; with the weighting off the
rule is exactly Algorithm 1's.

Drift tracking and re-acquisition
---------------------------------
With tracking on, packets accepted with renormalised confidence ``>= track_min_confidence`` update their
device. Those whose CFO fits it (``|f - c_k| <= 3 s_k``) move its centre and spread by exponential moving
statistics with weight ``track_alpha`` per packet, the centre moving by at most ``max_step`` per packet.
For a batch holding ``m`` such packets of one device the update uses their mean with weight
``1 - (1 - track_alpha)**m`` and a step bound ``m * max_step`` (exactly the per-packet rule when packets
arrive one at a time). ``lambda_k`` uses the larger of the training and the tracked spread.

A confidently accepted packet whose CFO does not fit its device means the device has jumped (a change of
environment) and the CNN, not the CFO, recognised it. With ``reacquire_packets = n`` (default 3) such packets
feed re-acquisition instead of the moving average: after ``n`` of them in a row for one device, whose CFOs
agree (each within ``3 s_k`` of their running mean), the device's centre jumps to their mean and its tracked
spread returns to the training one. A fitting packet of the device resets the count, and a device is never
re-centred farther than ``lambda_k`` from its training mean. Rejected and unconfident packets never update
anything. Tracking can be switched off; its state is saved with the model (``hybrid_state.json``).

Receiver offset
---------------
Every device's CFO is measured against the receiver's own oscillator, so another receiver (or the same one
warmed up differently) moves every device by the same offset: an SDR with a 10 ppm reference moves a whole
fleet by 8.7 kHz at 868 MHz, beyond any margin. The gate subtracts a common receiver offset ``r`` from every
packet's CFO before anything else (``receiver_offset_ppm`` when the operator knows it, 0 otherwise), and with
``receiver_tracking`` (on by default) it learns ``r`` from the CNN: packets the CNN alone calls with
probability ``>= receiver_min_confidence`` give residuals ``f - r - c_k`` for their CNN device; over the last
``max(receiver_window, 3 K)`` of them (K devices), each device's median residual is taken. The receiver
is taken to have moved when fewer than half of the devices seen lie inside their windows (``|median| <=
lambda_k``); ``r`` then moves by the median of the largest group of devices that agree with each other (each
within ``3 s_k``; at least ``receiver_min_devices`` of them), provided that brings at least two thirds of the
devices seen back inside their windows. A receiver offset together with a change of environment (crystal
devices move, TCXO ones do not) is found this way: the larger group sets ``r``, the margin keeps the other.
A shift of part of the fleet that leaves most devices inside their windows (2 ppm of half the fleet) never
moves ``r``; it is left to each device's tracking and re-acquisition. Offline, a recording is
classified as a whole: :meth:`CfoGate.calibrate_receiver` applies the same rule to all of its packets first
(a file that holds one device after another shows the devices' agreement only as a whole).

Gate parameters saved before the carrier was stored (no ``carrier_hz`` entry) load as they were written:
margin 1000 Hz, drift allowance 300 Hz, no floor, no re-acquisition, so old model directories decide as
before.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError, ModelError

__all__ = ["GateParams", "GateResult", "CfoGate", "DEFAULT_CARRIER_HZ", "ppm_to_hz", "hz_to_ppm"]

log = logging.getLogger(__name__)

DEFAULT_CARRIER_HZ = 868.1e6
"""Carrier assumed when a gate does not know its own (gates saved before the carrier was stored), Hz."""

# Each quantity of the gate is given in Hz or in ppm of the carrier (never both); when neither is given, the
# default below applies, in its unit.
_QUANTITIES = ("margin", "cfo_weight_std", "max_step")
_DEFAULTS: dict[str, tuple[str, float]] = {
    "margin": ("ppm", 2.5),
    "cfo_weight_std": ("ppm", 0.1),
    "max_step": ("hz", 10.0),
}
# Gate parameters saved before the carrier was stored: what the missing entries meant then.
_LEGACY: dict[str, Any] = {
    "margin_hz": 1000.0,
    "cfo_weight_std_hz": 300.0,
    "max_step_hz": 10.0,
    "cfo_weight_floor": 0.0,
    "reacquire_packets": 0,
    "receiver_tracking": False,
}
# A packet's CFO fits its device when it lies within this many weighting standard deviations of the centre.
_FIT_SIGMAS = 3.0


def ppm_to_hz(ppm: npt.ArrayLike, carrier_hz: float) -> npt.NDArray[np.float64]:
    """A frequency offset in ppm of ``carrier_hz`` converted to Hz.

    Examples
    --------
    >>> float(ppm_to_hz(2.0, 433e6))
    866.0
    """
    return np.asarray(ppm, dtype=np.float64) * (carrier_hz / 1e6)


def hz_to_ppm(offset_hz: npt.ArrayLike, carrier_hz: float) -> npt.NDArray[np.float64]:
    """A frequency offset in Hz converted to ppm of ``carrier_hz`` (inverse of :func:`ppm_to_hz`).

    Examples
    --------
    >>> float(hz_to_ppm(1736.2, 868.1e6))
    2.0
    """
    return np.asarray(offset_hz, dtype=np.float64) / (carrier_hz / 1e6)


@dataclass(frozen=True, slots=True)
class GateParams:
    """Parameters of the CFO gate, its CFO weighting, drift tracking and re-acquisition (module docstring).

    The margin, the weighting's drift allowance and the tracking step are each given either in Hz
    (``*_hz``) or in ppm of ``carrier_hz`` (``*_ppm``), not both; the one not given stays None. With neither,
    the default applies: margin 2.5 ppm, drift allowance 0.1 ppm, step 10 Hz.

    Parameters
    ----------
    k_sigma : float
        Gate half-width in training standard deviations (the range term usually dominates).
    margin_hz : float or None
        Added to every device's half-width, in Hz, for drift the training day cannot show.
    tracking : bool
        Update the device statistics from confidently accepted packets.
    track_alpha : float
        Exponential weight of one packet, in (0, 1].
    max_step_hz : float or None
        Largest move of a device's centre per packet by the moving average, in Hz.
    track_min_confidence : float
        Renormalised probability a packet needs to update its device.
    cfo_weighting : bool
        Weight the devices left in the window by a CFO likelihood (module docstring); False gives
        Algorithm 1's plain renormalisation.
    cfo_weight_std_hz : float or None
        Drift allowance added (in quadrature) to each device's spread in that likelihood, in Hz (> 0).
    carrier_hz : float or None
        Carrier frequency of the devices, Hz; None: unknown, :data:`DEFAULT_CARRIER_HZ` is assumed.
    margin_ppm, cfo_weight_std_ppm, max_step_ppm : float or None
        The same three quantities in ppm of the carrier.
    cfo_weight_floor : float
        Floor added to every device's CFO likelihood, 0 to 1: the CFO can move a decision by at most
        ``log(1 + 1 / floor)`` nats, and a CFO that fits no device leaves the CNN's ranking as it is.
        0 gives the plain Gaussian weighting.
    reacquire_packets : int
        Re-centre a device after this many consecutive confidently accepted packets whose CFOs fit it no
        more but agree with each other (0: never).
    receiver_offset_ppm : float
        How much higher every CFO reads through this receiver than through the training one, ppm of the
        carrier, when known (a receiver whose oscillator runs 10 ppm low reads +10): the starting point of
        receiver tracking.
    receiver_tracking : bool
        Learn a common receiver offset from CNN-confident packets (module docstring).
    receiver_window : int
        CNN-confident packets the receiver offset is estimated from (at least 3 per device).
    receiver_min_devices : int
        Devices that must be seen, and agree on a common offset, before it is applied.
    receiver_min_confidence : float
        CNN probability a packet's call needs to feed receiver tracking (0.5: more likely than all the
        other devices together; the per-device medians and the agreement rule absorb the wrong calls).
    """

    k_sigma: float = 4.0
    margin_hz: float | None = None
    tracking: bool = True
    track_alpha: float = 0.02
    max_step_hz: float | None = None
    track_min_confidence: float = 0.9
    cfo_weighting: bool = True
    cfo_weight_std_hz: float | None = None
    carrier_hz: float | None = None
    margin_ppm: float | None = None
    cfo_weight_std_ppm: float | None = None
    max_step_ppm: float | None = None
    cfo_weight_floor: float = 0.05
    reacquire_packets: int = 3
    receiver_offset_ppm: float = 0.0
    receiver_tracking: bool = True
    receiver_window: int = 64
    receiver_min_devices: int = 3
    receiver_min_confidence: float = 0.5

    def __post_init__(self) -> None:
        if not np.isfinite(self.k_sigma) or self.k_sigma < 0:
            raise ConfigError(f"k_sigma={self.k_sigma} is not valid: use a finite value >= 0")
        if self.carrier_hz is not None and not (np.isfinite(self.carrier_hz) and self.carrier_hz > 0):
            raise ConfigError(f"carrier_hz={self.carrier_hz} is not valid: use a finite frequency > 0 Hz")
        for q in _QUANTITIES:
            hz, ppm = getattr(self, f"{q}_hz"), getattr(self, f"{q}_ppm")
            if hz is not None and ppm is not None:
                raise ConfigError(f"{q}_hz={hz} and {q}_ppm={ppm} are both given: give one of the two")
            if hz is None and ppm is None:
                unit, value = _DEFAULTS[q]
                object.__setattr__(self, f"{q}_{unit}", value)
        for name in ("margin_hz", "margin_ppm"):
            v = getattr(self, name)
            if v is not None and (not np.isfinite(v) or v < 0):
                raise ConfigError(f"{name}={v} is not valid: use a finite value >= 0")
        for name in ("max_step_hz", "max_step_ppm", "cfo_weight_std_hz", "cfo_weight_std_ppm"):
            v = getattr(self, name)
            if v is not None and (not np.isfinite(v) or v <= 0):
                raise ConfigError(f"{name}={v} is not valid: use a finite value > 0")
        if not 0 < self.track_alpha <= 1:
            raise ConfigError(f"track_alpha={self.track_alpha} is not valid: use 0 < track_alpha <= 1")
        if not 0 <= self.track_min_confidence <= 1:
            raise ConfigError(f"track_min_confidence={self.track_min_confidence} is not valid: use 0 to 1")
        if not 0 <= self.receiver_min_confidence <= 1:
            raise ConfigError(
                f"receiver_min_confidence={self.receiver_min_confidence} is not valid: use 0 to 1"
            )
        if not 0 <= self.cfo_weight_floor <= 1:
            raise ConfigError(f"cfo_weight_floor={self.cfo_weight_floor} is not valid: use 0 to 1")
        n = self.reacquire_packets
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ConfigError(f"reacquire_packets={n!r} is not valid: use an integer >= 0")
        object.__setattr__(self, "reacquire_packets", int(n))
        if not np.isfinite(self.receiver_offset_ppm):
            raise ConfigError(
                f"receiver_offset_ppm={self.receiver_offset_ppm} is not valid: use a finite value"
            )
        for name in ("receiver_window", "receiver_min_devices"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{name}={v!r} is not valid: use an integer >= 1")
            object.__setattr__(self, name, int(v))

    # -- the quantities in Hz at the carrier --------------------------------------------------------
    @property
    def effective_carrier_hz(self) -> float:
        """``carrier_hz``, or :data:`DEFAULT_CARRIER_HZ` when it is unknown, Hz."""
        return DEFAULT_CARRIER_HZ if self.carrier_hz is None else float(self.carrier_hz)

    def _in_hz(self, q: str) -> float:
        hz, ppm = getattr(self, f"{q}_hz"), getattr(self, f"{q}_ppm")
        return float(hz) if hz is not None else float(ppm_to_hz(ppm, self.effective_carrier_hz))

    @property
    def effective_margin_hz(self) -> float:
        """The margin in Hz at the carrier."""
        return self._in_hz("margin")

    @property
    def effective_cfo_weight_std_hz(self) -> float:
        """The weighting's drift allowance in Hz at the carrier."""
        return self._in_hz("cfo_weight_std")

    @property
    def effective_max_step_hz(self) -> float:
        """The moving average's largest step per packet in Hz at the carrier."""
        return self._in_hz("max_step")

    # -- persistence ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateParams:
        """Inverse of :meth:`to_dict`; a dict without ``carrier_hz`` (saved before the carrier was stored)
        is read as its version meant it: margin 1000 Hz, drift allowance 300 Hz, no floor, no re-acquisition
        unless it says otherwise."""
        names = {f.name for f in dataclasses.fields(cls)}
        if set(d) - names:
            raise ConfigError(
                f"unknown GateParams field(s) {sorted(set(d) - names)}; valid are {sorted(names)}"
            )
        d = dict(d)
        if "carrier_hz" not in d:
            for name, value in _LEGACY.items():
                q = name[: -len("_hz")] if name.endswith("_hz") else None
                if q is None or d.get(f"{q}_ppm") is None:
                    d.setdefault(name, value)
        return cls(**d)


@dataclass(frozen=True)
class GateResult:
    """Outcome of the gate for a batch of N packets over K devices.

    Attributes
    ----------
    index : ndarray of int64, shape (N,)
        Predicted class index (into the gate's ``device_ids``), -1 when the packet is rejected.
    confidence : ndarray of float32, shape (N,)
        Renormalised probability of the prediction (0 when rejected).
    allowed : ndarray of bool, shape (N, K)
        Which devices the packet's CFO leaves possible.
    probs : ndarray of float32, shape (N, K)
        Renormalised probabilities (all zero for a rejected packet).
    """

    index: npt.NDArray[np.int64]
    confidence: npt.NDArray[np.float32]
    allowed: npt.NDArray[np.bool_]
    probs: npt.NDArray[np.float32]

    @property
    def rejected(self) -> npt.NDArray[np.bool_]:
        """(N,) True where every device was ruled out."""
        return self.index < 0


def _counts(x: npt.ArrayLike | None, k: int) -> npt.NDArray[np.int64]:
    return np.zeros(k, np.int64) if x is None else np.asarray(x, np.int64).reshape(-1)


def _f64(x: npt.ArrayLike, name: str, n: int | None = None) -> npt.NDArray[np.float64]:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if n is not None and a.shape[0] != n:
        raise ConfigError(f"{name} has {a.shape[0]} entries, expected {n}")
    return a


class CfoGate:
    """Per-device CFO statistics, the gate built from them, and drift tracking.

    Build it with :meth:`fit` from training CFO estimates; save it with :meth:`to_dict` / :meth:`from_dict`.

    Examples
    --------
    >>> gate = CfoGate.fit([100.0, 110.0, 5000.0, 5020.0], [0, 0, 1, 1], device_ids=[3, 7],
    ...                    params=GateParams(margin_hz=200.0))
    >>> gate.allowed([105.0, 2500.0]).tolist()
    [[True, False], [False, False]]
    """

    def __init__(
        self,
        device_ids: npt.ArrayLike,
        mean_hz: npt.ArrayLike,
        std_hz: npt.ArrayLike,
        min_hz: npt.ArrayLike,
        max_hz: npt.ArrayLike,
        n_train: npt.ArrayLike,
        params: GateParams | None = None,
        *,
        center_hz: npt.ArrayLike | None = None,
        tracked_std_hz: npt.ArrayLike | None = None,
        n_updates: npt.ArrayLike | None = None,
        reacquire_count: npt.ArrayLike | None = None,
        reacquire_sum_hz: npt.ArrayLike | None = None,
        n_reacquired: npt.ArrayLike | None = None,
        receiver_offset_hz: float | None = None,
    ) -> None:
        self.device_ids = np.asarray(device_ids, dtype=np.int64).reshape(-1)
        k = self.device_ids.size
        self.mean_hz = _f64(mean_hz, "mean_hz", k)
        self.std_hz = _f64(std_hz, "std_hz", k)
        self.min_hz = _f64(min_hz, "min_hz", k)
        self.max_hz = _f64(max_hz, "max_hz", k)
        self.n_train = np.asarray(n_train, dtype=np.int64).reshape(-1)
        self.params = params or GateParams()
        self.center_hz = self.mean_hz.copy() if center_hz is None else _f64(center_hz, "center_hz", k)
        self.tracked_std_hz = (
            self.std_hz.copy() if tracked_std_hz is None else _f64(tracked_std_hz, "tracked_std_hz", k)
        )
        self.n_updates = _counts(n_updates, k)
        self.reacquire_count = _counts(reacquire_count, k)
        self.reacquire_sum_hz = (
            np.zeros(k) if reacquire_sum_hz is None else _f64(reacquire_sum_hz, "reacquire_sum_hz", k)
        )
        self.n_reacquired = _counts(n_reacquired, k)
        self.receiver_offset_hz = (
            float(ppm_to_hz(self.params.receiver_offset_ppm, self.params.effective_carrier_hz))
            if receiver_offset_hz is None
            else float(receiver_offset_hz)
        )
        self._rx_index = np.zeros(0, np.int64)  # CNN class of the recent CNN-confident packets
        self._rx_residual_hz = np.zeros(0)  # their CFO minus receiver offset minus their device's centre
        if not np.all(np.isfinite(self.mean_hz)):
            raise ConfigError("CFO gate: a device has no finite training CFO mean (no training packets?)")

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        cfo_hz: npt.ArrayLike,
        class_index: npt.ArrayLike,
        device_ids: npt.ArrayLike,
        params: GateParams | None = None,
    ) -> CfoGate:
        """Learn each device's CFO statistics from training packets.

        Parameters
        ----------
        cfo_hz : array_like of float, shape (N,)
            CFO estimate of every training packet, in Hz.
        class_index : array_like of int, shape (N,)
            Class index (0..K-1) of every packet.
        device_ids : array_like of int, shape (K,)
            Device id of each class.
        params : GateParams, optional
            Gate parameters.
        """
        cfo = _f64(cfo_hz, "cfo_hz")
        idx = np.asarray(class_index, dtype=np.int64).reshape(-1)
        ids = np.asarray(device_ids, dtype=np.int64).reshape(-1)
        k = ids.size
        if idx.shape != cfo.shape:
            raise ConfigError(f"class_index has {idx.size} entries but cfo_hz has {cfo.size}")
        if idx.size and (idx.min() < 0 or idx.max() >= k):
            raise ConfigError(f"class_index must be in 0..{k - 1}")
        n = np.bincount(idx, minlength=k)
        if np.any(n == 0):
            raise ConfigError(f"CFO gate: no training packets for device(s) {ids[n == 0].tolist()}")
        mean = np.bincount(idx, weights=cfo, minlength=k) / n
        var = np.bincount(idx, weights=(cfo - mean[idx]) ** 2, minlength=k) / n
        lo = np.full(k, np.inf)
        hi = np.full(k, -np.inf)
        np.minimum.at(lo, idx, cfo)
        np.maximum.at(hi, idx, cfo)
        return cls(ids, mean, np.sqrt(var), lo, hi, n, params)

    # -- the gate ----------------------------------------------------------------------------------
    @property
    def lambda_hz(self) -> npt.NDArray[np.float64]:
        """(K,) gate half-width of every device, in Hz (module docstring)."""
        p = self.params
        spread = np.maximum(self.std_hz, self.tracked_std_hz)
        half_range = np.maximum(self.max_hz - self.mean_hz, self.mean_hz - self.min_hz)
        return np.maximum(p.k_sigma * spread, half_range) + p.effective_margin_hz

    @property
    def carrier_hz(self) -> float:
        """Carrier frequency the gate's ppm quantities refer to, Hz (``params.effective_carrier_hz``)."""
        return self.params.effective_carrier_hz

    @property
    def weight_std_hz(self) -> npt.NDArray[np.float64]:
        """(K,) standard deviation ``s_k`` of each device's CFO likelihood, Hz (module docstring)."""
        spread = np.maximum(self.std_hz, self.tracked_std_hz)
        return np.sqrt(spread**2 + self.params.effective_cfo_weight_std_hz**2)

    def allowed(self, cfo_hz: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """(N, K) True where ``|cfo_hz - centre_k| <= lambda_k`` (device k not ruled out)."""
        return self._allowed(self._offsets_hz(cfo_hz))

    def cfo_log_likelihood(self, cfo_hz: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(N, K) log-likelihood of each packet's CFO under each device, up to a constant.

        ``log(exp(-(f - c_k)**2 / (2 * s_k**2)) + floor)`` with
        ``s_k**2 = max(training, tracked spread)**2 + drift allowance**2`` and ``floor = cfo_weight_floor``
        (module docstring; floor 0 gives the Gaussian's ``-(f - c_k)**2 / (2 * s_k**2)``): the term
        :meth:`apply` adds to the logits when ``cfo_weighting`` is on.
        """
        return self._log_likelihood(self._offsets_hz(cfo_hz))

    # The two above share one (N, K) table of offsets, which apply() computes once for both.
    def _offsets_hz(self, cfo_hz: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(N, K) ``cfo_hz - receiver offset - centre_k``, Hz."""
        return _f64(cfo_hz, "cfo_hz")[:, None] - self.receiver_offset_hz - self.center_hz[None, :]

    def _allowed(self, offsets_hz: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return np.abs(offsets_hz) <= self.lambda_hz[None, :]

    def _log_likelihood(self, offsets_hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        s2 = np.maximum(self.std_hz, self.tracked_std_hz) ** 2 + self.params.effective_cfo_weight_std_hz**2
        ll = -0.5 * offsets_hz**2 / s2[None, :]
        floor = self.params.cfo_weight_floor
        return np.logaddexp(ll, np.log(floor)) if floor > 0 else ll

    def apply(self, logits: npt.ArrayLike, cfo_hz: npt.ArrayLike) -> GateResult:
        """Gate the CNN output of N packets by their CFO.

        Parameters
        ----------
        logits : array_like of float, shape (N, K)
            CNN logits (log-probabilities up to a constant), classes in the order of ``device_ids``.
        cfo_hz : array_like of float, shape (N,)
            CFO estimate of every packet, in Hz.
        """
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.device_ids.size:
            raise ConfigError(f"logits have shape {z.shape}, expected (N, {self.device_ids.size})")
        offsets = self._offsets_hz(cfo_hz)
        if offsets.shape[0] != z.shape[0]:
            raise ConfigError(f"cfo_hz has {offsets.shape[0]} entries but logits have {z.shape[0]} rows")
        mask = self._allowed(offsets)
        if self.params.cfo_weighting:
            z = z + self._log_likelihood(offsets)
        masked = np.where(mask, z, -np.inf)
        top = masked.max(axis=1, keepdims=True)
        any_ok = mask.any(axis=1)
        e = np.where(mask, np.exp(masked - np.where(any_ok[:, None], top, 0.0)), 0.0)
        total = e.sum(axis=1, keepdims=True)
        probs = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
        index = np.where(any_ok, probs.argmax(axis=1), -1).astype(np.int64)
        conf = np.where(any_ok, probs.max(axis=1), 0.0).astype(np.float32)
        return GateResult(index, conf, mask, probs.astype(np.float32))

    # -- drift tracking ----------------------------------------------------------------------------
    def update(
        self,
        cfo_hz: npt.ArrayLike,
        index: npt.ArrayLike,
        confidence: npt.ArrayLike,
        *,
        cnn_index: npt.ArrayLike | None = None,
        cnn_confidence: npt.ArrayLike | None = None,
    ) -> npt.NDArray[np.int64]:
        """Move device statistics towards confidently accepted packets (no-op when tracking is off).

        Packets whose CFO fits their device (within ``3 s_k`` of its centre) feed the moving average; with
        ``reacquire_packets`` > 0 the others feed re-acquisition instead (module docstring). With the CNN's
        own predictions given and ``receiver_tracking`` on, CNN-confident packets first feed the receiver
        offset.

        Parameters
        ----------
        cfo_hz : array_like of float, shape (N,)
            CFO of each packet, Hz.
        index : array_like of int, shape (N,)
            Gated prediction (class index, -1 = rejected), as in :attr:`GateResult.index`.
        confidence : array_like of float, shape (N,)
            Renormalised confidence of each prediction.
        cnn_index, cnn_confidence : array_like, shape (N,), optional
            The CNN's own prediction (class index) and its probability, for receiver tracking.

        Returns
        -------
        n_used : ndarray of int64, shape (K,)
            Packets that updated each device (moving average or re-acquisition).
        """
        k = self.device_ids.size
        if not self.params.tracking:
            return np.zeros(k, np.int64)
        cfo = _f64(cfo_hz, "cfo_hz")
        offset_hz = self.receiver_offset_hz  # the one these packets were gated with
        if self.params.receiver_tracking and cnn_index is not None and cnn_confidence is not None:
            self._track_receiver(
                cfo,
                np.asarray(cnn_index, np.int64).reshape(-1),
                _f64(cnn_confidence, "cnn_confidence", cfo.size),
            )
        cfo = cfo - offset_hz
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        conf = _f64(confidence, "confidence", cfo.size)
        use = (idx >= 0) & (conf >= self.params.track_min_confidence) & np.isfinite(cfo)
        n_used = np.bincount(idx[use], minlength=k)
        if self.params.reacquire_packets > 0 and use.any():
            use = use & ~self._reacquire(cfo, idx, use)
        self._moving_average(cfo[use], idx[use])
        self.n_updates += n_used
        return n_used

    def calibrate_receiver(
        self, cfo_hz: npt.ArrayLike, cnn_index: npt.ArrayLike, cnn_confidence: npt.ArrayLike
    ) -> float:
        """Estimate the receiver offset from a whole recording at once, before deciding any of it.

        The rule of receiver tracking (module docstring) over all of the given packets instead of the last
        ``receiver_window``: a recording that holds one device after another has its devices' agreement only
        as a whole. Uses no labels, only the CNN's own predictions. Returns the receiver offset, Hz.
        """
        cfo = _f64(cfo_hz, "cfo_hz")
        idx, resid = self._confident_residuals(
            cfo, np.asarray(cnn_index, np.int64).reshape(-1), _f64(cnn_confidence, "cnn_confidence", cfo.size)
        )
        self._apply_common_offset(idx, resid)
        return self.receiver_offset_hz

    def _track_receiver(
        self, cfo: npt.NDArray[np.float64], cnn_idx: npt.NDArray[np.int64], cnn_conf: npt.NDArray[np.float64]
    ) -> None:
        """Feed CNN-confident packets to the receiver-offset window; apply a common offset the devices in it
        agree on (module docstring)."""
        idx, resid = self._confident_residuals(cfo, cnn_idx, cnn_conf)
        if not idx.size:
            return
        window = max(self.params.receiver_window, 3 * self.device_ids.size)
        self._rx_index = np.concatenate([self._rx_index, idx])[-window:]
        self._rx_residual_hz = np.concatenate([self._rx_residual_hz, resid])[-window:]
        if self._apply_common_offset(self._rx_index, self._rx_residual_hz):
            self._rx_index = np.zeros(0, np.int64)
            self._rx_residual_hz = np.zeros(0)

    def _confident_residuals(
        self, cfo: npt.NDArray[np.float64], cnn_idx: npt.NDArray[np.int64], cnn_conf: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """CNN class and residual ``f - r - c_k`` (Hz) of the packets whose CNN call is confident enough."""
        use = (cnn_conf >= self.params.receiver_min_confidence) & np.isfinite(cfo) & (cnn_idx >= 0)
        idx = cnn_idx[use]
        return idx, cfo[use] - self.receiver_offset_hz - self.center_hz[idx]

    def _apply_common_offset(self, idx: npt.NDArray[np.int64], resid_hz: npt.NDArray[np.float64]) -> bool:
        """Move the receiver offset by the residual (Hz) of the largest group of devices that agree, when that
        brings most devices back into their windows (module docstring); True if it moved."""
        p = self.params
        seen = np.unique(idx)
        if seen.size < p.receiver_min_devices:
            return False
        med = np.array([np.median(resid_hz[idx == d]) for d in seen])
        tol = _FIT_SIGMAS * self.weight_std_hz[seen]
        # agree[i, j]: device j's median lies within its own tolerance of device i's
        agree = np.abs(med[None, :] - med[:, None]) <= tol[None, :]
        size = agree.sum(axis=1)
        best = np.flatnonzero(size == size.max())
        i = best[np.argmin(np.abs(med[best]))]  # of equally large groups, the one nearest no offset
        if size[i] < p.receiver_min_devices:
            return False
        common = float(np.median(med[agree[i]]))
        window = self.lambda_hz[seen]
        inside_before = np.sum(np.abs(med) <= window)
        inside_after = np.sum(np.abs(med - common) <= window)
        if not (2 * inside_before < seen.size and 3 * inside_after >= 2 * seen.size):
            return False
        self.receiver_offset_hz += common
        log.info(
            "CFO gate: receiver offset now %.1f Hz (%+.2f ppm), agreed by %d of %d devices; %d of them back "
            "in their windows",
            self.receiver_offset_hz,
            float(hz_to_ppm(self.receiver_offset_hz, self.carrier_hz)),
            int(size[i]),
            seen.size,
            int(inside_after),
        )
        return True

    def _moving_average(self, cfo: npt.NDArray[np.float64], idx: npt.NDArray[np.int64]) -> None:
        """Exponential moving centre and spread of each device from its packets ``cfo`` (Hz)."""
        k = self.device_ids.size
        m = np.bincount(idx, minlength=k)
        has = m > 0
        if not has.any():
            return
        xbar = np.bincount(idx, weights=cfo, minlength=k)[has] / m[has]
        x2bar = np.bincount(idx, weights=cfo**2, minlength=k)[has] / m[has]
        a = self.params.track_alpha
        w = 1.0 - (1.0 - a) ** m[has]
        c = self.center_hz[has]
        bound = m[has] * self.params.effective_max_step_hz
        step = np.clip(w * (xbar - c), -bound, bound)
        new_c = c + step
        # Moving second moment about the new centre: E[(x - c)^2] = x2bar - 2 c xbar + c^2.
        dev2 = np.maximum(x2bar - 2 * new_c * xbar + new_c**2, 0.0)
        v = self.tracked_std_hz[has] ** 2
        self.tracked_std_hz[has] = np.sqrt(v + w * (dev2 - v))
        self.center_hz[has] = new_c

    def _reacquire(
        self, cfo: npt.NDArray[np.float64], idx: npt.NDArray[np.int64], use: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.bool_]:
        """Count confident packets that no longer fit their device; re-centre a device after enough.

        Returns the (N,) mask of packets taken by re-acquisition (they stay out of the moving average).
        """
        taken = np.zeros(cfo.size, bool)
        fit_hz = _FIT_SIGMAS * self.weight_std_hz
        d_all = np.maximum(idx, 0)
        misfit = use & (np.abs(cfo - self.center_hz[d_all]) > fit_hz[d_all])
        involved = (self.reacquire_count > 0) | (np.bincount(idx[misfit], minlength=self.device_ids.size) > 0)
        # Order matters (a fitting packet resets its device's count), so the packets of devices with a count
        # running or starting go one by one: normally none, only while a device has jumped.
        for i in np.flatnonzero(use & involved[d_all]):
            d = idx[i]
            if abs(cfo[i] - self.center_hz[d]) <= fit_hz[d]:
                self.reacquire_count[d] = 0
                self.reacquire_sum_hz[d] = 0.0
                continue
            taken[i] = True
            n = self.reacquire_count[d]
            if n > 0 and abs(cfo[i] - self.reacquire_sum_hz[d] / n) > fit_hz[d]:
                n = 0
                self.reacquire_sum_hz[d] = 0.0
            self.reacquire_count[d] = n + 1
            self.reacquire_sum_hz[d] += cfo[i]
            if n + 1 < self.params.reacquire_packets:
                continue
            new_c = self.reacquire_sum_hz[d] / (n + 1)
            self.reacquire_count[d] = 0
            self.reacquire_sum_hz[d] = 0.0
            if abs(new_c - self.mean_hz[d]) > self.lambda_hz[d]:
                continue  # never beyond the training window: a device cannot be walked away
            log.info(
                "CFO gate: device %d re-acquired at %.1f Hz (%+.2f ppm from its centre)",
                self.device_ids[d],
                new_c,
                float(hz_to_ppm(new_c - self.center_hz[d], self.carrier_hz)),
            )
            self.center_hz[d] = new_c
            self.tracked_std_hz[d] = self.std_hz[d]
            self.n_reacquired[d] += 1
        return taken

    def set_tracking(self, on: bool) -> None:
        """Switch drift tracking on or off."""
        self.params = dataclasses.replace(self.params, tracking=bool(on))

    def reset_tracking(self) -> None:
        """Forget tracked drift: centres back to the training means, the receiver offset back to
        ``receiver_offset_ppm``."""
        self.center_hz = self.mean_hz.copy()
        self.tracked_std_hz = self.std_hz.copy()
        self.n_updates[:] = 0
        self.reacquire_count[:] = 0
        self.reacquire_sum_hz[:] = 0.0
        self.n_reacquired[:] = 0
        self.receiver_offset_hz = float(ppm_to_hz(self.params.receiver_offset_ppm, self.carrier_hz))
        self._rx_index = np.zeros(0, np.int64)
        self._rx_residual_hz = np.zeros(0)

    # -- persistence -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-typed dict for JSON (training statistics, tracked state, parameters)."""
        return {
            "params": self.params.to_dict(),
            "device_ids": self.device_ids.tolist(),
            "mean_hz": self.mean_hz.tolist(),
            "std_hz": self.std_hz.tolist(),
            "min_hz": self.min_hz.tolist(),
            "max_hz": self.max_hz.tolist(),
            "n_train": self.n_train.tolist(),
            "center_hz": self.center_hz.tolist(),
            "tracked_std_hz": self.tracked_std_hz.tolist(),
            "n_updates": self.n_updates.tolist(),
            "reacquire_count": self.reacquire_count.tolist(),
            "reacquire_sum_hz": self.reacquire_sum_hz.tolist(),
            "n_reacquired": self.n_reacquired.tolist(),
            "receiver_offset_hz": self.receiver_offset_hz,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CfoGate:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                d["device_ids"],
                d["mean_hz"],
                d["std_hz"],
                d["min_hz"],
                d["max_hz"],
                d["n_train"],
                GateParams.from_dict(d["params"]),
                center_hz=d.get("center_hz"),
                tracked_std_hz=d.get("tracked_std_hz"),
                n_updates=d.get("n_updates"),
                reacquire_count=d.get("reacquire_count"),
                reacquire_sum_hz=d.get("reacquire_sum_hz"),
                n_reacquired=d.get("n_reacquired"),
                receiver_offset_hz=d.get("receiver_offset_hz"),
            )
        except (KeyError, TypeError) as exc:
            raise ModelError(f"CFO gate state is incomplete or malformed: {exc}") from None

    def copy(self) -> CfoGate:
        """An independent copy (tracking one copy leaves the other unchanged)."""
        return CfoGate.from_dict(self.to_dict())
