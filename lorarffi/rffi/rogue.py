"""Rogue-detection figures from scores of legitimate and rogue packets: ROC, AUC, EER, the threshold and FRR
at a false-accept rate, and the ROC plot.

A packet is accepted as legitimate when its score (:mod:`lorarffi.rffi.knn`: lower is more like an enrolled
device) is at most the threshold ``t``. For every ``t``: false-accept rate ``FAR(t)`` = share of rogue
packets accepted, false-reject rate ``FRR(t)`` = share of legitimate packets rejected. The ROC is the
true-positive rate of rogue detection (``1 - FAR``) against its false-positive rate (``FRR``), the authors'
convention (positive = rogue). AUC is the probability that a random rogue packet scores above a random
legitimate one (ties count one half, the Mann-Whitney statistic), so it needs no curve interpolation. EER is
where ``FAR = FRR``, linearly interpolated between the two thresholds around the crossing.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError
from lorarffi.rffi.threshold import DEFAULT_FAR, threshold_for_far

__all__ = ["RogueFigures", "rogue_figures", "plot_roc"]


def _finite(x: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ConfigError(f"no {name} scores: rogue figures need both legitimate and rogue packets")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"{name} scores hold {int(np.sum(~np.isfinite(a)))} non-finite values")
    return a


def _auc(legit: npt.NDArray[np.float64], rogue: npt.NDArray[np.float64]) -> float:
    """P(rogue score > legit score) + P(equal) / 2, from the ranks of the pooled scores."""
    pooled = np.concatenate([legit, rogue])
    order = np.argsort(pooled, kind="mergesort")
    ranks = np.empty(pooled.size, np.float64)
    ranks[order] = np.arange(1, pooled.size + 1)
    _, inverse, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    # ties share their mean rank
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    u = ranks[legit.size :].sum() - rogue.size * (rogue.size + 1) / 2.0
    return float(u / (legit.size * rogue.size))


@dataclass(frozen=True)
class RogueFigures:
    """Per-packet rogue-detection figures.

    Attributes
    ----------
    auc : float
        Area under the ROC.
    eer : float
        Equal error rate (FAR = FRR).
    eer_threshold : float
        The score threshold at the EER.
    far : float
        The false-accept rate the operating threshold was chosen for.
    threshold : float
        The largest threshold accepting at most ``far`` of the rogue packets.
    far_measured, frr : float
        Share of rogue packets accepted and of legitimate packets rejected at ``threshold``.
    n_legit, n_rogue : int
        Packets scored.
    thresholds : ndarray of float64, shape (P,)
        The ROC's thresholds, ascending (every distinct score, and one below them all).
    far_curve, frr_curve : ndarray of float64, shape (P,)
        ``FAR(t)`` and ``FRR(t)`` at those thresholds.
    """

    auc: float
    eer: float
    eer_threshold: float
    far: float
    threshold: float
    far_measured: float
    frr: float
    n_legit: int
    n_rogue: int
    thresholds: npt.NDArray[np.float64]
    far_curve: npt.NDArray[np.float64]
    frr_curve: npt.NDArray[np.float64]

    def to_dict(self) -> dict[str, float | int]:
        """The scalar figures as a JSON-ready dict (the curves left out)."""
        return {
            "auc": self.auc,
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "far": self.far,
            "threshold": self.threshold,
            "far_measured": self.far_measured,
            "frr": self.frr,
            "n_legit": self.n_legit,
            "n_rogue": self.n_rogue,
        }


def rogue_figures(
    legit_scores: npt.ArrayLike, rogue_scores: npt.ArrayLike, *, far: float = DEFAULT_FAR
) -> RogueFigures:
    """ROC figures of scores of legitimate and rogue packets (module docstring).

    Parameters
    ----------
    legit_scores : array_like of float, shape (N,)
        Scores of packets of enrolled devices.
    rogue_scores : array_like of float, shape (R,)
        Scores of packets of devices not enrolled.
    far : float
        False-accept rate of the operating threshold reported (default 1 %).
    """
    legit = _finite(legit_scores, "legitimate")
    rogue = _finite(rogue_scores, "rogue")
    values = np.unique(np.concatenate([legit, rogue]))
    thresholds = np.concatenate([[np.nextafter(values[0], -np.inf)], values])
    far_curve = np.searchsorted(np.sort(rogue), thresholds, side="right") / rogue.size
    frr_curve = 1.0 - np.searchsorted(np.sort(legit), thresholds, side="right") / legit.size
    # FAR rises and FRR falls with t: the crossing lies between the last t with FAR < FRR and the next
    diff = far_curve - frr_curve
    i = int(np.searchsorted(diff, 0.0, side="left"))  # first t with FAR >= FRR (diff is non-decreasing)
    if i == 0:
        eer, eer_t = float(frr_curve[0]), float(thresholds[0])
    else:
        a, b = diff[i - 1], diff[i]
        w = 0.0 if b == a else -a / (b - a)
        eer = float(
            (1 - w) * (far_curve[i - 1] + frr_curve[i - 1]) / 2 + w * (far_curve[i] + frr_curve[i]) / 2
        )
        eer_t = float((1 - w) * thresholds[i - 1] + w * thresholds[i])
    t = threshold_for_far(rogue, far)
    return RogueFigures(
        auc=_auc(legit, rogue),
        eer=eer,
        eer_threshold=eer_t,
        far=float(far),
        threshold=t,
        far_measured=float(np.mean(rogue <= t)),
        frr=float(np.mean(legit > t)),
        n_legit=int(legit.size),
        n_rogue=int(rogue.size),
        thresholds=thresholds,
        far_curve=far_curve,
        frr_curve=frr_curve,
    )


def plot_roc(
    figures: RogueFigures | dict[str, RogueFigures],
    path: str | os.PathLike,
    *,
    title: str = "rogue detection",
) -> pathlib.Path:
    """Write the ROC of one or several labelled results, with each operating point and EER marked
    (:func:`lorarffi.rffi.plots.roc_figure`), as a PNG; returns ``path``."""
    from lorarffi.rffi.plots import roc_figure, save_figure

    return save_figure(roc_figure(figures, title=title), path, dpi=110)
