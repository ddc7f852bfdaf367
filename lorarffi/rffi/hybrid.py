"""The CFO-gated hybrid classifier (Shen et al. 2021, Algorithm 1, improved) and its drift tracking.

The rule
--------
From the training packets each device ``k`` gets CFO statistics: mean ``mu_k``, standard deviation
``sigma_k``, minimum and maximum. Its gate half-width is

    lambda_k = max(k_sigma * sigma_k, max_k - mu_k, mu_k - min_k) + margin_hz

i.e. the device's whole training range (warm-up drift included), widened by ``margin_hz`` for the day-to-day
drift that the training day cannot show. Shen et al. measured shifts of "hundreds of Hz" between days; if a
device's daily offset has a standard deviation up to 250 Hz, the difference of two days has one of 354 Hz, and
three of those are about 1 kHz: the default ``margin_hz = 1000`` (1.15 ppm at 868.1 MHz). A packet with CFO
estimate ``f`` rules out every device with ``|f - c_k| > lambda_k``, where ``c_k`` is the device's centre
(``mu_k`` until drift tracking moves it). The CNN's probabilities of the remaining devices are renormalised to
sum to one and the best one is predicted; when every device is ruled out the packet is rejected as ``unknown``
(never silently assigned).

CFO weighting (our improvement, on by default)
----------------------------------------------
Algorithm 1 uses the CFO only to rule devices out: inside the window a packet 900 Hz from a device's centre
counts as much as one at the centre. With ``cfo_weighting`` the remaining devices' probabilities are also
weighted by how well the CFO fits each of them, a Gaussian likelihood before renormalising:

    p_k  proportional to  p_cnn,k * exp(-(f - c_k)**2 / (2 * s_k**2))
    s_k**2 = sigma_k**2 + cfo_weight_std_hz**2

``sigma_k`` is the larger of the training and the tracked spread; ``cfo_weight_std_hz`` (default 300 Hz)
allows for a day-to-day shift the training day cannot show (the 354 Hz above is the upper end; 300 Hz is a
typical one). Ruled-out devices stay ruled out; with the weighting off the rule is exactly Algorithm 1's. It
matters when the CNN is unsure (low SNR), where the packet's CFO still separates devices that the window
cannot.

Drift tracking
--------------
With tracking on, packets accepted with renormalised confidence ``>= track_min_confidence`` update their
device's centre and spread by exponential moving statistics with weight ``track_alpha`` per packet, the centre
moving by at most ``max_step_hz`` per packet. For a batch holding ``m`` such packets of one device the update
uses their mean with weight ``1 - (1 - track_alpha)**m`` and a step bound ``m * max_step_hz`` (exactly the
per-packet rule when packets arrive one at a time). ``lambda_k`` uses the larger of the training and the
tracked spread. Tracking can be switched off; its state is saved with the model (``hybrid_state.json``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError, ModelError

__all__ = ["GateParams", "GateResult", "CfoGate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GateParams:
    """Parameters of the CFO gate and of its drift tracking (see the module docstring for the rule).

    Parameters
    ----------
    k_sigma : float
        Gate half-width in training standard deviations (the range term usually dominates).
    margin_hz : float
        Added to every device's half-width, in Hz, for day-to-day drift.
    tracking : bool
        Update the device statistics from confidently accepted packets.
    track_alpha : float
        Exponential weight of one packet, in (0, 1].
    max_step_hz : float
        Largest move of a device's centre per packet, in Hz.
    track_min_confidence : float
        Renormalised probability a packet needs to update its device.
    cfo_weighting : bool
        Weight the devices left in the window by a Gaussian CFO likelihood (module docstring); False gives
        Algorithm 1's plain renormalisation.
    cfo_weight_std_hz : float
        Drift allowance added (in quadrature) to each device's spread in that likelihood, in Hz (> 0).
    """

    k_sigma: float = 4.0
    margin_hz: float = 1000.0
    tracking: bool = True
    track_alpha: float = 0.02
    max_step_hz: float = 10.0
    track_min_confidence: float = 0.9
    cfo_weighting: bool = True
    cfo_weight_std_hz: float = 300.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.k_sigma) or self.k_sigma < 0:
            raise ConfigError(f"k_sigma={self.k_sigma} is not valid: use a finite value >= 0")
        if not np.isfinite(self.margin_hz) or self.margin_hz < 0:
            raise ConfigError(f"margin_hz={self.margin_hz} is not valid: use a finite value >= 0 Hz")
        if not 0 < self.track_alpha <= 1:
            raise ConfigError(f"track_alpha={self.track_alpha} is not valid: use 0 < track_alpha <= 1")
        if not np.isfinite(self.max_step_hz) or self.max_step_hz <= 0:
            raise ConfigError(f"max_step_hz={self.max_step_hz} is not valid: use a finite value > 0 Hz")
        if not 0 <= self.track_min_confidence <= 1:
            raise ConfigError(f"track_min_confidence={self.track_min_confidence} is not valid: use 0 to 1")
        if not np.isfinite(self.cfo_weight_std_hz) or self.cfo_weight_std_hz <= 0:
            raise ConfigError(
                f"cfo_weight_std_hz={self.cfo_weight_std_hz} is not valid: use a finite value > 0 Hz"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateParams:
        names = {f.name for f in dataclasses.fields(cls)}
        if set(d) - names:
            raise ConfigError(
                f"unknown GateParams field(s) {sorted(set(d) - names)}; valid are {sorted(names)}"
            )
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
        self.n_updates = (
            np.zeros(k, np.int64) if n_updates is None else np.asarray(n_updates, np.int64).reshape(-1)
        )
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
        return np.maximum(p.k_sigma * spread, half_range) + p.margin_hz

    def allowed(self, cfo_hz: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """(N, K) True where ``|cfo_hz - centre_k| <= lambda_k`` (device k not ruled out)."""
        return self._allowed(self._offsets_hz(cfo_hz))

    def cfo_log_likelihood(self, cfo_hz: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(N, K) Gaussian log-likelihood of each packet's CFO under each device, up to a constant.

        ``-(f - c_k)**2 / (2 * s_k**2)`` with
        ``s_k**2 = max(training, tracked spread)**2 + cfo_weight_std_hz**2`` (module docstring): the term
        :meth:`apply` adds to the logits when ``cfo_weighting`` is on.
        """
        return self._log_likelihood(self._offsets_hz(cfo_hz))

    # The two above share one (N, K) table of offsets, which apply() computes once for both.
    def _offsets_hz(self, cfo_hz: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """(N, K) ``cfo_hz - centre_k``, Hz."""
        return _f64(cfo_hz, "cfo_hz")[:, None] - self.center_hz[None, :]

    def _allowed(self, offsets_hz: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        return np.abs(offsets_hz) <= self.lambda_hz[None, :]

    def _log_likelihood(self, offsets_hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        s2 = np.maximum(self.std_hz, self.tracked_std_hz) ** 2 + self.params.cfo_weight_std_hz**2
        return -0.5 * offsets_hz**2 / s2[None, :]

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
        self, cfo_hz: npt.ArrayLike, index: npt.ArrayLike, confidence: npt.ArrayLike
    ) -> npt.NDArray[np.int64]:
        """Move device statistics towards confidently accepted packets (no-op when tracking is off).

        Parameters
        ----------
        cfo_hz : array_like of float, shape (N,)
            CFO of each packet, Hz.
        index : array_like of int, shape (N,)
            Gated prediction (class index, -1 = rejected), as in :attr:`GateResult.index`.
        confidence : array_like of float, shape (N,)
            Renormalised confidence of each prediction.

        Returns
        -------
        n_used : ndarray of int64, shape (K,)
            Packets that updated each device.
        """
        k = self.device_ids.size
        if not self.params.tracking:
            return np.zeros(k, np.int64)
        cfo = _f64(cfo_hz, "cfo_hz")
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        conf = _f64(confidence, "confidence", cfo.size)
        use = (idx >= 0) & (conf >= self.params.track_min_confidence) & np.isfinite(cfo)
        m = np.bincount(idx[use], minlength=k)
        has = m > 0
        if not has.any():
            return m
        xbar = np.bincount(idx[use], weights=cfo[use], minlength=k)[has] / m[has]
        x2bar = np.bincount(idx[use], weights=cfo[use] ** 2, minlength=k)[has] / m[has]
        a = self.params.track_alpha
        w = 1.0 - (1.0 - a) ** m[has]
        c = self.center_hz[has]
        bound = m[has] * self.params.max_step_hz
        step = np.clip(w * (xbar - c), -bound, bound)
        new_c = c + step
        # Moving second moment about the new centre: E[(x - c)^2] = x2bar - 2 c xbar + c^2.
        dev2 = np.maximum(x2bar - 2 * new_c * xbar + new_c**2, 0.0)
        v = self.tracked_std_hz[has] ** 2
        self.tracked_std_hz[has] = np.sqrt(v + w * (dev2 - v))
        self.center_hz[has] = new_c
        self.n_updates += m
        return m

    def set_tracking(self, on: bool) -> None:
        """Switch drift tracking on or off."""
        self.params = dataclasses.replace(self.params, tracking=bool(on))

    def reset_tracking(self) -> None:
        """Forget tracked drift: centres back to the training means."""
        self.center_hz = self.mean_hz.copy()
        self.tracked_std_hz = self.std_hz.copy()
        self.n_updates[:] = 0

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
            )
        except (KeyError, TypeError) as exc:
            raise ModelError(f"CFO gate state is incomplete or malformed: {exc}") from None

    def copy(self) -> CfoGate:
        """An independent copy (tracking one copy leaves the other unchanged)."""
        return CfoGate.from_dict(self.to_dict())
