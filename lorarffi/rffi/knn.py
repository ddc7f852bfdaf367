"""K-NN search over enrolled devices' reference embeddings, and the score authentication decides with.

The score
---------
Embeddings are L2-normalised (a zero row stays zero); the distance of two is the Euclidean one,
``sqrt(2 - 2 cos)`` on the unit sphere (the authors' k-NN and rogue score use it, and the triplet loss trains
with it). The score of a packet ``x`` against an enrolled device ``d`` is

    s_d(x) = mean of the min(k, n_d) smallest distances from x to d's n_d reference embeddings

(k = 15 by default, as the authors'), and the packet's *nearest device* is the one with the smallest
``s_d``, its *distance* ``d1``. The authors' rogue score averages the k nearest references of any device;
this one averages those of one device, so a packet that falls between two devices is not scored as if it
belonged to both, and the nearest device and the score agree.

The packet's score (lower: more like an enrolled device) is that distance (``score="knn"``, the default), or
(``score="cohort"``) that distance divided by the square root of the runner-up's, the second nearest
device's ``d2``:

    score(x) = d1 / sqrt(min(d2, sqrt 2))

(``sqrt 2``, the distance of two orthogonal unit vectors, stands in for an unrelated device when there is no
second one). A packet received in another place, by another receiver or at a lower SNR than its device's
enrollment moves away from every enrolled device, its own included: ``d1`` grows, but so does ``d2``, and
the cohort score grows less than ``d1`` does; a stranger lies about as far from its nearest device as from
the next one, so its score stays high. It rests on the runner-up being a typical other device: in a registry
of 10 look-alike devices it accepted more enrolled packets under shift at a lower EER, but in registries of 4
holding a pair of devices close to each other it rejected many more of the pair's packets (their runner-up
is each other), so it is an option, not the default (docs/benchmarks.md, open_set and "Training changes
tried"). The exponent 1/2 (:data:`COHORT_EXPONENT`) was chosen there from 0 (``d1``) to 1 (the ratio, which
lets look-alike strangers in). Thresholds are chosen on the same score (:mod:`lorarffi.rffi.threshold`).

The search
----------
Every device gets a centroid (the unit mean of its references). :meth:`ReferenceIndex.search` scores a
packet against the ``n_candidates`` devices with the most similar centroids (all devices when there are no
more than that), exactly, so a packet costs ``K D`` for the centroids plus ``C n D`` for the candidates'
references instead of ``K n D``; a device whose centroid is not among the candidates cannot win. How often
that changes the result against the exhaustive :meth:`ReferenceIndex.score_all` is measured in
docs/benchmarks.md (open_set, scale), where numpy's matrix products were also measured against torch's,
scikit-learn's and faiss's exact search.

References are held per device in one zero-padded ``(K, n_max, D)`` float32 block (``n_max`` = the largest
enrollment), so a fleet enrolled with about equal packet counts wastes nothing.

Groups of packets
-----------------
A group of packets of one transmitter (:func:`decision_groups`) is at the mean of its packets' distances
``s_d`` from a device; :meth:`ReferenceIndex.search_groups` finds each group's nearest device (and
runner-up) among the union of its packets' candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError

__all__ = [
    "DEFAULT_K",
    "DEFAULT_CANDIDATES",
    "SCORES",
    "DEFAULT_SCORE",
    "COHORT_EXPONENT",
    "UNRELATED_DISTANCE",
    "Neighbours",
    "ReferenceIndex",
    "unit_rows",
    "distance_from_cos",
    "decision_groups",
]

DEFAULT_K = 15
"""Neighbours a score averages (the authors' k-NN and rogue score)."""
DEFAULT_CANDIDATES = 32
"""Devices, by centroid similarity, whose references are searched per packet."""
SCORES = ("cohort", "knn")
"""Scores a packet can be decided on (module docstring): ``d1 / sqrt(d2)`` or ``d1`` alone."""
DEFAULT_SCORE = "knn"
COHORT_EXPONENT = 0.5
"""Power of the runner-up's distance the cohort score divides by."""
UNRELATED_DISTANCE = float(np.sqrt(2.0))
"""Distance of two orthogonal unit vectors: the runner-up's distance when there is none (and its cap)."""
_CHUNK_VALUES = 1 << 22  # float32 values per temporary block of (packets, candidates, references): 16 MB


def unit_rows(x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Rows of ``x`` (N, D) scaled to unit L2 norm, float32 (an all-zero row stays zero)."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ConfigError(f"embeddings have shape {a.shape}, expected (N, D)")
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norm > 0, norm, np.float32(1.0))


def distance_from_cos(cos: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Euclidean distance of unit vectors from their cosine similarity: ``sqrt(max(2 - 2 cos, 0))``."""
    return np.sqrt(np.maximum(2.0 - 2.0 * cos, 0.0)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Neighbours:
    """The nearest enrolled device of N packets.

    Attributes
    ----------
    index : ndarray of int64, shape (N,)
        Position of the nearest device in :attr:`ReferenceIndex.device_ids`.
    device_id : ndarray of int64, shape (N,)
        Its device id.
    score : ndarray of float64, shape (N,)
        The packet's score (module docstring; the index's ``score``).
    distance : ndarray of float64, shape (N,)
        ``d1``: mean distance to the nearest device's k nearest references.
    runner_up_distance : ndarray of float64, shape (N,)
        ``d2``: the same of the second nearest device searched (+inf when there is none).
    """

    index: npt.NDArray[np.int64]
    device_id: npt.NDArray[np.int64]
    score: npt.NDArray[np.float64]
    distance: npt.NDArray[np.float64]
    runner_up_distance: npt.NDArray[np.float64]


class ReferenceIndex:
    """Reference embeddings of enrolled devices, searchable by the per-device k-NN score (module docstring).

    Parameters
    ----------
    device_ids : array_like of int, shape (M,)
        The device of every reference embedding.
    embeddings : array_like of float, shape (M, D)
        The reference embeddings (normalised here).
    k : int
        Neighbours a score averages (>= 1).
    n_candidates : int
        Devices searched per packet, chosen by centroid similarity (>= 1).
    score : {"cohort", "knn"}
        What a packet is decided on (module docstring).

    Attributes
    ----------
    device_ids : ndarray of int64, shape (K,)
        The enrolled devices, ascending.
    counts : ndarray of int64, shape (K,)
        References per device.
    centroids : ndarray of float32, shape (K, D)
        Unit mean of each device's references.
    """

    def __init__(
        self,
        device_ids: npt.ArrayLike,
        embeddings: npt.ArrayLike,
        *,
        k: int = DEFAULT_K,
        n_candidates: int = DEFAULT_CANDIDATES,
        score: str = DEFAULT_SCORE,
    ) -> None:
        if score not in SCORES:
            raise ConfigError(f"score={score!r} is not valid: use one of {', '.join(SCORES)}")
        for name, v in (("k", k), ("n_candidates", n_candidates)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{name}={v!r} is not valid: use an integer >= 1")
        ids = np.asarray(device_ids, dtype=np.int64).reshape(-1)
        emb = unit_rows(embeddings)
        if emb.shape[0] != ids.size:
            raise ConfigError(f"{ids.size} device ids for {emb.shape[0]} reference embeddings")
        if ids.size == 0:
            raise ConfigError("no reference embeddings: enroll at least one device first")
        self.k = int(k)
        self.n_candidates = int(n_candidates)
        self.score = score
        order = np.argsort(ids, kind="stable")
        ids, emb = ids[order], emb[order]
        self.device_ids, first, self.counts = np.unique(ids, return_index=True, return_counts=True)
        n_max = int(self.counts.max())
        self.blocks = np.zeros((self.device_ids.size, n_max, emb.shape[1]), np.float32)
        rows = np.arange(ids.size) - np.repeat(first, self.counts)  # position within its device
        self.blocks[np.repeat(np.arange(self.device_ids.size), self.counts), rows] = emb
        self.centroids = unit_rows(self.blocks.sum(axis=1))

    @property
    def dim(self) -> int:
        """Length of an embedding."""
        return int(self.blocks.shape[2])

    def __len__(self) -> int:
        """Number of enrolled devices."""
        return int(self.device_ids.size)

    # -- scores ------------------------------------------------------------------------------------
    def device_scores(
        self,
        queries: npt.ArrayLike,
        candidates: npt.ArrayLike,
        *,
        leave_out: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Scores of packets against chosen devices.

        Parameters
        ----------
        queries : array_like of float, shape (N, D)
            Embeddings (normalised here).
        candidates : array_like of int, shape (N, C)
            Positions in :attr:`device_ids` of the devices to score each packet against.
        leave_out : (array_like of int, array_like of int), each of shape (N,), optional
            Per packet, a device position and a row within that device's references to leave out (device -1:
            none): how an enrollment packet is scored against its own device without itself.

        Returns
        -------
        ndarray of float64, shape (N, C)
            ``s_d(x)`` (module docstring); +inf for a device left with no reference.
        """
        q = self._queries(queries)
        cand = np.asarray(candidates, dtype=np.int64)
        if cand.ndim != 2 or cand.shape[0] != q.shape[0]:
            raise ConfigError(f"candidates have shape {cand.shape}, expected ({q.shape[0]}, C)")
        n_max = self.blocks.shape[1]
        out = np.empty(cand.shape, np.float64)
        step = max(1, _CHUNK_VALUES // max(1, cand.shape[1] * n_max * self.dim))
        if leave_out is not None:
            out_dev, out_row = (np.asarray(a, np.int64).reshape(-1) for a in leave_out)
        for s in range(0, q.shape[0], step):
            c = cand[s : s + step]
            cos = np.matmul(self.blocks[c], q[s : s + step, None, :, None])[..., 0]  # (n, C, n_max)
            dist = distance_from_cos(cos)
            counts = self.counts[c]
            valid = np.arange(n_max)[None, None, :] < counts[..., None]
            if leave_out is not None:
                own = c == out_dev[s : s + step, None]  # (n, C)
                drop = own[..., None] & (np.arange(n_max)[None, None, :] == out_row[s : s + step, None, None])
                valid &= ~drop
                counts = counts - drop.any(axis=2)
            out[s : s + step] = _mean_of_smallest(np.where(valid, dist, np.inf), counts, self.k)
        return out

    def candidates(
        self, queries: npt.ArrayLike, *, exclude: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.int64]:
        """The devices to score each packet against: positions (N, C) of the ``C = min(n_candidates, K)``
        devices whose centroids are most similar (cosine) to the packet, most similar first.

        ``exclude`` (N,) gives a device position per packet to leave out (-1: none).
        """
        q = self._queries(queries)
        n_dev = len(self)
        n_excl = 0 if exclude is None else 1
        c = min(self.n_candidates, n_dev - n_excl)
        if c < 1:
            return np.zeros((q.shape[0], 0), np.int64)
        sim = q @ self.centroids.T  # (N, K)
        if exclude is not None:
            ex = np.asarray(exclude, np.int64).reshape(-1)
            rows = np.flatnonzero(ex >= 0)
            sim[rows, ex[rows]] = -np.inf
        if c < n_dev:
            top = np.argpartition(-sim, c - 1, axis=1)[:, :c]
        else:
            top = np.broadcast_to(np.arange(n_dev), (q.shape[0], n_dev)).copy()
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1)

    def search(self, queries: npt.ArrayLike, *, exclude: npt.ArrayLike | None = None) -> Neighbours:
        """The nearest device of each packet and its score, among its :meth:`candidates`.

        Parameters
        ----------
        queries : array_like of float, shape (N, D)
        exclude : array_like of int, shape (N,), optional
            A device position per packet that may not be its nearest (-1: none): how an enrolled device's
            packets are scored as if the device were a stranger (leave one device out).
        """
        q = self._queries(queries)
        cand = self.candidates(q, exclude=exclude)
        if cand.shape[1] == 0:
            raise ConfigError("no device left to search: enroll at least two devices to leave one out")
        return self._nearest(cand, self.device_scores(q, cand))

    def search_groups(
        self,
        queries: npt.ArrayLike,
        members: npt.ArrayLike,
        *,
        exclude: npt.ArrayLike | None = None,
    ) -> Neighbours:
        """The nearest device of each group of packets and its score, among the union of the members'
        :meth:`candidates`: a group's distance ``s_d`` to a device is the mean of its members'.

        Parameters
        ----------
        queries : array_like of float, shape (N, D)
        members : array_like of int, shape (G, M)
            Rows of ``queries`` in each group (:func:`decision_groups`).
        exclude : array_like of int, shape (G,), optional
            A device position per group that may not be its nearest (-1: none).
        """
        q = self._queries(queries)
        groups = np.asarray(members, dtype=np.int64)
        if groups.ndim != 2:
            raise ConfigError(f"members have shape {groups.shape}, expected (G, M)")
        ex = None if exclude is None else np.asarray(exclude, np.int64).reshape(-1)
        index = np.zeros(groups.shape[0], np.int64)
        d1, d2 = np.zeros(groups.shape[0]), np.full(groups.shape[0], np.inf)
        for g, rows in enumerate(groups):
            cand = np.unique(
                self.candidates(q[rows], exclude=None if ex is None else np.full(rows.size, ex[g]))
            )
            if cand.size == 0:
                raise ConfigError("no device left to search: enroll at least two devices to leave one out")
            s = self.device_scores(q[rows], np.broadcast_to(cand, (rows.size, cand.size))).mean(axis=0)
            best, d1[g : g + 1], d2[g : g + 1] = _two_smallest(s[None, :])
            index[g] = cand[best[0]]
        return Neighbours(index, self.device_ids[index], self.normalise(d1, d2), d1, d2)

    def normalise(
        self, distance: npt.ArrayLike, runner_up_distance: npt.ArrayLike
    ) -> npt.NDArray[np.float64]:
        """The score (module docstring) of packets at ``distance`` from a device whose best competitor lies at
        ``runner_up_distance`` (+inf: none), both (N,)."""
        d1 = np.asarray(distance, dtype=np.float64)
        if self.score == "knn":
            return d1.copy()
        d2 = np.minimum(np.asarray(runner_up_distance, dtype=np.float64), UNRELATED_DISTANCE)
        return d1 / d2**COHORT_EXPONENT

    def _nearest(self, cand: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]) -> Neighbours:
        """The nearest of candidates (N, C) by their ``s_d`` (N, C), with the runner-up's distance."""
        best, d1, d2 = _two_smallest(scores)
        index = np.take_along_axis(cand, best[:, None], axis=1)[:, 0]
        return Neighbours(index, self.device_ids[index], self.normalise(d1, d2), d1, d2)

    def score_all(self, queries: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``s_d`` (N, K) of every packet against every device: the exhaustive search :meth:`search`
        approximates (for small fleets, tests and measurements)."""
        q = self._queries(queries)
        return self.device_scores(q, np.broadcast_to(np.arange(len(self)), (q.shape[0], len(self))))

    def _queries(self, queries: npt.ArrayLike) -> npt.NDArray[np.float32]:
        q = unit_rows(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if q.shape[1] != self.dim:
            raise ConfigError(f"embeddings have {q.shape[1]} dimensions, the references {self.dim}")
        return q


def decision_groups(transmitter: npt.ArrayLike, packets_per_decision: int) -> npt.NDArray[np.int64]:
    """Groups of ``M = packets_per_decision`` consecutive packets of one transmitter.

    Parameters
    ----------
    transmitter : array_like of int, shape (N,)
        Who sent each packet (true device ids, or each packet's nearest device), in arrival order.
    packets_per_decision : int
        M >= 1.

    Returns
    -------
    ndarray of int64, shape (G, M)
        Input positions; each transmitter's packets in order, cut into runs of M (a shorter last run is
        dropped), transmitters in order of their first packet.

    Examples
    --------
    >>> decision_groups([7, 3, 7, 7, 3, 7], 2).tolist()
    [[0, 2], [3, 5], [1, 4]]
    """
    m = int(packets_per_decision)
    if m < 1:
        raise ConfigError(f"packets_per_decision={packets_per_decision!r} is not valid: use 1 or more")
    who = np.asarray(transmitter).reshape(-1)
    _, first = np.unique(who, return_index=True)
    groups = [np.zeros((0, m), np.int64)]
    for t in who[np.sort(first)]:
        rows = np.flatnonzero(who == t)
        groups.append(rows[: rows.size // m * m].reshape(-1, m))
    return np.concatenate(groups)


def _two_smallest(
    scores: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per row of ``scores`` (N, C): the column of the smallest (the first of ties), the smallest and the
    second smallest (+inf when C is 1)."""
    n = scores.shape[0]
    order = np.argsort(scores, axis=1, kind="stable")[:, :2]
    best = order[:, 0]
    second = scores[np.arange(n), order[:, 1]] if scores.shape[1] > 1 else np.full(n, np.inf)
    return best, scores[np.arange(n), best], second


def _mean_of_smallest(
    dist: npt.NDArray[np.float32], counts: npt.NDArray[np.int64], k: int
) -> npt.NDArray[np.float64]:
    """Mean of the ``min(k, count)`` smallest of each row's last axis (+inf entries are padding); +inf where
    ``count`` is 0."""
    kk = min(k, dist.shape[-1])
    part = np.partition(dist, kk - 1, axis=-1)[..., :kk] if kk < dist.shape[-1] else dist
    n = np.minimum(counts, k)
    total = np.where(np.isfinite(part), part, 0.0).sum(axis=-1, dtype=np.float64)
    return np.divide(total, n, out=np.full(n.shape, np.inf), where=n > 0)
