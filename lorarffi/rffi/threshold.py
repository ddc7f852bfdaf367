"""The operating threshold of authentication, chosen from the enrollment packets alone for a requested
false-accept rate (FAR: the share of a stranger's packets accepted as an enrolled device).

No rogue is at hand when devices are enrolled, but every enrolled device is a stranger to the others: it is
of the same chip model and was never seen by the extractor, as a rogue would be. So the enrollment packets
are scored twice (:mod:`lorarffi.rffi.knn`'s score, the index's ``score``: by default the mean distance to
the nearest device's k nearest references):

- **impostor scores**, leave one device out: each packet against every enrolled device but its own (its own
  device removed from the search). Accepting a packet with ``score <= t`` accepts this share of them: the
  FAR of ``t`` on strangers like the enrolled devices.
- **genuine scores**, leave one packet out: each packet against its own device's references without itself
  (its runner-up the nearest other device). Rejecting ``score > t`` rejects this share of them: the
  false-reject rate (FRR) of ``t``, as far as packets of the enrollment session show it (later sessions,
  other places and receivers score higher).

The threshold is the largest score that accepts at most ``far`` of the impostor scores (midway between two
order statistics). Leave-one-out keeps every enrollment packet in the registry (a held-out split would drop
references and score the packets against fewer of them than authentication will see); it costs one search per
packet, so at most ``max_packets`` evenly spread packets are scored (per device, evenly over its enrollment).
The estimate's binomial standard error is ``sqrt(far (1 - far) / n)`` over ``n`` impostor scores, and the
packets of one device are not independent draws: enroll enough devices that ``far * n`` is well above 10.
The CFO gate is not part of it: it can only reject more, so the FAR of the combined rule is at most ``far``.

Decisions on groups of M packets (their mean score) get their own threshold, chosen the same way from groups
of M consecutive enrollment packets of one device: a mean of M impostor scores varies less, so the
FAR-quantile moves towards the impostors' typical score and the threshold rises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError
from lorarffi.rffi.knn import ReferenceIndex, decision_groups

__all__ = [
    "DEFAULT_FAR",
    "METHOD",
    "ThresholdChoice",
    "choose_threshold",
    "threshold_for_far",
    "enrollment_scores",
]

log = logging.getLogger(__name__)

DEFAULT_FAR = 0.01
"""False-accept rate of a threshold when none is asked for (1 %)."""
METHOD = "leave-one-device-out impostor scores of the enrollment packets"
"""How :func:`choose_threshold` chooses (stored with the threshold)."""
_MAX_PACKETS = 5_000


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold chosen from enrollment packets.

    Attributes
    ----------
    value : float
        Accept a packet whose score is at most this.
    far : float
        The false-accept rate asked for.
    far_estimate : float
        Share of the impostor scores accepted (at most ``far``).
    frr_estimate : float
        Share of the genuine (leave-one-packet-out) scores rejected; NaN without genuine scores.
    n_impostor, n_genuine : int
        Scores each estimate rests on.
    n_devices : int
        Enrolled devices.
    packets_per_decision : int
        Packets per decision it was chosen for (its scores are means over that many).
    """

    value: float
    far: float
    far_estimate: float
    frr_estimate: float
    n_impostor: int
    n_genuine: int
    n_devices: int
    packets_per_decision: int = 1

    @property
    def method(self) -> str:
        """In words, for :meth:`~lorarffi.rffi.registry.Registry.set_threshold`."""
        return (
            f"{METHOD} ({self.n_impostor} packets of {self.n_devices} devices; estimated FRR "
            f"{self.frr_estimate:.4f} on leave-one-packet-out enrollment packets)"
        )


def threshold_for_far(impostor_scores: npt.ArrayLike, far: float) -> float:
    """The largest score threshold that accepts (``score <= t``) at most ``far`` of ``impostor_scores``.

    With ``m = floor(far * n)`` of the ``n`` sorted scores allowed, the threshold lies midway between the
    ``m``-th and the next larger score (below the smallest one when ``m`` is 0), so ties never let more in.

    Examples
    --------
    >>> threshold_for_far([0.9, 0.5, 0.7, 0.3], 0.5)
    0.6
    >>> threshold_for_far([0.9, 0.5, 0.7, 0.3], 0.1) < 0.3
    True
    """
    if not 0.0 < far < 1.0:
        raise ConfigError(f"far={far!r} is not valid: use a rate between 0 and 1 (exclusive)")
    s = np.sort(np.asarray(impostor_scores, dtype=np.float64).reshape(-1))
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ConfigError("no impostor scores to choose a threshold from: enroll at least two devices")
    m = int(np.floor(far * s.size + 1e-9))
    # lower m until the m-th and the next score differ (a tie across the cut would accept both)
    while 0 < m < s.size and s[m - 1] == s[m]:
        m -= 1
    if m == 0:
        return float(np.nextafter(s[0], -np.inf))
    if m == s.size:
        return float(s[-1])
    return float((s[m - 1] + s[m]) / 2.0)


def _spread_rows(
    index: ReferenceIndex, max_packets: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(device position, row) of at most ``max_packets`` enrollment packets, evenly over devices and over
    each device's rows."""
    per_device = max(1, max_packets // len(index))
    dev, row = [], []
    for d, n in enumerate(index.counts.tolist()):
        r = np.unique(np.linspace(0, n - 1, min(n, per_device)).round().astype(np.int64))
        dev.append(np.full(r.size, d, np.int64))
        row.append(r)
    return np.concatenate(dev), np.concatenate(row)


def enrollment_scores(
    index: ReferenceIndex, *, max_packets: int = _MAX_PACKETS, packets_per_decision: int = 1
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Impostor (leave one device out) and genuine (leave one packet out) scores of enrollment packets, or of
    groups of ``packets_per_decision`` consecutive enrollment packets of one device (a group's distance to a
    device the mean of its packets', as :meth:`~lorarffi.rffi.knn.ReferenceIndex.search_groups` scores them).

    Returns
    -------
    impostor : ndarray of float64, shape (P,)
        Each scored packet's (group's) score with its own device left out of the search.
    genuine : ndarray of float64, shape (G,)
        Its score against its own device's references, each packet without itself (devices enrolled with one
        packet have none and are left out).
    """
    if len(index) < 2:
        raise ConfigError(
            f"{len(index)} device enrolled: a threshold needs at least two (each is the others' stranger)"
        )
    dev, row = _spread_rows(index, max_packets * packets_per_decision)
    x = index.blocks[dev, row]
    own = index.device_scores(x, dev[:, None], leave_out=(dev, row))[:, 0]
    if packets_per_decision == 1:
        other = index.search(x, exclude=dev)
    else:
        groups = decision_groups(dev, packets_per_decision)
        other = index.search_groups(x, groups, exclude=dev[groups[:, 0]])
        own = own[groups].mean(axis=1)
    # a genuine packet's runner-up is the nearest device other than its own: the impostor search's nearest
    genuine = index.normalise(own, other.distance)
    return other.score, genuine[np.isfinite(genuine)]


def choose_threshold(
    index: ReferenceIndex, far: float, *, max_packets: int = _MAX_PACKETS, packets_per_decision: int = 1
) -> ThresholdChoice:
    """Choose the threshold for false-accept rate ``far`` from the enrolled references (module docstring).

    Parameters
    ----------
    index : ReferenceIndex
        The enrolled devices' reference embeddings (the enrollment packets), with the k of the score.
    far : float
        False-accept rate asked for, 0 < far < 1.
    max_packets : int
        Most enrollment packets (groups) scored.
    packets_per_decision : int
        M: the threshold of decisions on groups of M packets (their mean score), from groups of M consecutive
        enrollment packets of one device.
    """
    impostor, genuine = enrollment_scores(
        index, max_packets=max_packets, packets_per_decision=packets_per_decision
    )
    t = threshold_for_far(impostor, far)
    n = impostor.size
    if far * n < 10:
        log.warning(
            "the threshold for FAR %g (%d packet(s) per decision) rests on %d impostor scores of %d devices: "
            "%.1f of them expected below it; enroll more devices or packets for a reliable estimate",
            far,
            packets_per_decision,
            n,
            len(index),
            far * n,
        )
    return ThresholdChoice(
        value=t,
        far=float(far),
        far_estimate=float(np.mean(impostor <= t)),
        frr_estimate=float(np.mean(genuine > t)) if genuine.size else float("nan"),
        n_impostor=int(n),
        n_genuine=int(genuine.size),
        n_devices=len(index),
        packets_per_decision=int(packets_per_decision),
    )
