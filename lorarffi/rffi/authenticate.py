"""Authenticate packets against a device registry: the nearest enrolled device by K-NN in embedding space, the
score threshold, the CFO gate, multi-packet fusion, and the audit log.

>>> emb = load_embedder("runs/extractor")                                          # doctest: +SKIP
>>> with Registry.open("fleet.db", model_fingerprint=emb.fingerprint) as reg:      # doctest: +SKIP
...     pre = emb.preprocess(stored_iq)
...     dec = authenticate(emb, reg, pre.iq, cfo_hz=pre.cfo_hz, source="capture.h5")
>>> dec.decision[:3]                                                               # doctest: +SKIP
[21, 'rogue', 23]

Per packet
----------
1. **Nearest device and score** (:mod:`lorarffi.rffi.knn`): the mean Euclidean distance of the packet's
   embedding to the k nearest reference embeddings of each candidate device; the nearest device is the one
   with the smallest, and that distance is the packet's score (``score="knn"``, the default), or, with
   ``score="cohort"``, that distance over the square root of the runner-up device's (a shift of place,
   receiver or SNR moves a packet away from every device alike, and the ratio follows it less than the
   distance does; it needs a runner-up that is a typical other device, :mod:`lorarffi.rffi.knn`).
2. **Threshold**: the score must be at most the registry's operating threshold, chosen from the enrollment
   packets for a false-accept rate (:mod:`lorarffi.rffi.threshold`; :func:`current_threshold` chooses it
   again when devices were enrolled since it was set or another rate, k or score is asked for).
3. **CFO gate**: the packet's CFO must lie within the nearest device's enrolled CFO window: the device's
   whole enrollment range (at least ``k_sigma`` standard deviations) widened by the margin of
   :class:`~lorarffi.rffi.hybrid.GateParams` (2.5 ppm of the carrier by default), as the hybrid classifier's
   gate does (:attr:`~lorarffi.rffi.hybrid.CfoGate.lambda_hz`). A receiver other than the enrollment one
   shifts every CFO alike; with ``calibrate_receiver`` the common offset is estimated first from the packets
   the score accepts (:meth:`~lorarffi.rffi.hybrid.CfoGate.calibrate_receiver`: it moves only when most
   devices seen lie outside their windows and two thirds come back). A packet without a CFO (NaN), or whose
   nearest device was enrolled without one, passes the gate.

4. **IQ gate** (:mod:`lorarffi.rffi.iq_gate`): the packet's IQ image and carrier leakage relative to its
   chirp (:func:`~lorarffi.dsp.impairment.tx_impairments`) must lie within ``tolerance`` standard errors
   (5 by default) of the nearest device's enrollment mean. A packet not measured, or whose nearest device was
   enrolled without these statistics, passes.

A packet passing all three is given its nearest device's id (verdict ``accept``); any other is ``rogue``
(``reason``: the checks it failed joined by ``+``: ``score``, ``cfo``, ``iq``, ``score+cfo``, ...), or,
with an SNR floor (``min_snr_db``), ``unknown`` when
its SNR is below it: too weak a packet to tell a stranger from an enrolled device's noisy fingerprint, so it
is not called (nor alerted as) a rogue. The gates never accept anything the score rejects, so
the false-accept rate is at most the threshold's; the CFO gate catches a stranger whose fingerprint passes but
whose carrier is elsewhere (it cannot catch one tuned to an enrolled device's CFO), the IQ gate one whose
spectrogram looks like an enrolled device's but whose transmitter's imbalance and leakage are its own.

Multi-packet decisions
----------------------
With ``packets_per_decision = M > 1``, consecutive packets of one transmitter are decided together, beside
the single-packet decisions (never instead). Groups: with ``transmitter_ids`` (labelled data: the file's
device ids) each transmitter's packets in input order, cut into runs of M; without them (live or unlabelled
recordings), each packet is given to its single-packet nearest device and each device's packets are cut into
runs of M in arrival order. A last run shorter than M is not decided (its packets' fused fields are empty).
A group's distance to a device is the mean of its packets' distances (over the union of their candidate
devices); its nearest device is the one with the smallest, and its score is made from that and the
runner-up's distance as a packet's is, compared with a threshold chosen for the same false-accept rate from
groups of M enrollment packets (:meth:`Authenticator.fused_threshold`: a mean of M distances varies less, so
the threshold differs from the single-packet one), its CFO is the median of its packets' CFOs, and its IQ
image and leakage the inverse-variance weighted mean of its packets' (:func:`~lorarffi.rffi.iq_gate.pooled`).

Drift tracking
--------------
With ``drift_tracking`` (the live registry stage's default; off for ``authenticate``), packets accepted
confidently, with a score at most :data:`TRACK_SCORE_RATIO` of the threshold and a finite CFO, move their
device's CFO centre and spread by the CFO gate's tracking rule (:meth:`~lorarffi.rffi.hybrid.CfoGate.update`:
an exponential moving average bounded per packet, re-acquisition after a few packets that agree on a new CFO).
Before each batch the authenticator takes the centres and spreads the registry stores
(:meth:`Authenticator.refresh_cfo`), and the batch's movement is added to the stored ``cfo_mean_hz`` and
``cfo_std_hz`` in SQL, in the same transaction as the batch's audit rows
(:meth:`~lorarffi.rffi.registry.Registry.record_decisions`): processes sharing one registry decide with
the drift all of them have stored and add their movements up (with one process, exactly what it tracked is
stored). Re-acquisition counts and the receiver offset stay each process's own. The enrollment range
(``cfo_min_hz``..``cfo_max_hz``) stays, so the gate's window (symmetric about the centre, covering that
range) always keeps the enrollment CFOs, widening by as much as the centre has moved.

Audit
-----
Every single-packet decision, and every fused one (source suffixed ``[fused M]``), is appended to the
registry's audit log in one transaction per call.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.impairment import IQ_FIT, TxImpairments
from lorarffi.errors import ConfigError
from lorarffi.rffi.classify import classify_preambles
from lorarffi.rffi.embedding import Embedder
from lorarffi.rffi.enroll import check_bound
from lorarffi.rffi.hybrid import CfoGate, GateParams
from lorarffi.rffi.iq_gate import DEFAULT_IQ_TOLERANCE, IqGate, IqStatistics, pooled
from lorarffi.rffi.knn import DEFAULT_CANDIDATES, DEFAULT_K, DEFAULT_SCORE, ReferenceIndex, decision_groups
from lorarffi.rffi.registry import AuditRow, DeviceRecord, Registry, Threshold
from lorarffi.rffi.registry.queries import CfoMove
from lorarffi.rffi.registry.schema import IQ_COLUMNS
from lorarffi.rffi.threshold import DEFAULT_FAR, choose_threshold

__all__ = [
    "DEFAULT_FAR",
    "ROGUE",
    "UNKNOWN",
    "TRACK_SCORE_RATIO",
    "Verdicts",
    "Decisions",
    "FusedDecisions",
    "Authenticator",
    "current_threshold",
    "decision_groups",
    "open_authenticator",
    "check_packet_input",
    "decide_packets",
    "authenticate",
    "audit_rows",
    "summarize",
]

log = logging.getLogger(__name__)

ROGUE = "rogue"
"""The verdict, and the decision, of a packet not accepted as an enrolled device."""
ACCEPT = "accept"
UNKNOWN = "unknown"
"""The verdict of a rejected packet below the SNR floor (:meth:`Decisions.with_snr_floor`)."""
TRACK_SCORE_RATIO = 0.8
"""A packet feeds drift tracking when accepted with a score at most this fraction of the threshold."""


@dataclass(frozen=True)
class Verdicts:
    """What single-packet and fused decisions share: per decided unit (a packet, or a group of packets), the
    device, the score and the CFO check.

    Attributes
    ----------
    device_id : ndarray of int64, shape (U,)
        The enrolled device the unit is accepted as, -1 for a rogue.
    nearest_device_id : ndarray of int64, shape (U,)
        The nearest enrolled device (accepted or not).
    score : ndarray of float64, shape (U,)
        The score (:mod:`lorarffi.rffi.knn`): mean distance to the nearest device's k nearest references
        (``score="knn"``), or that over the square root of the runner-up's (``"cohort"``); of a group, made
        from the means of its packets' distances.
    threshold : float
        The score threshold used.
    cfo_hz : ndarray of float64, shape (U,)
        CFO estimate, Hz (NaN: unknown); of a group, the median of its packets'.
    cfo_ok : ndarray of bool, shape (U,)
        The CFO lies in the nearest device's window (or cannot be checked).
    iq_z : ndarray of float64, shape (U,), or None
        Distance of the IQ image and leakage to the nearest device's, in standard errors (NaN: not checked;
        None: no IQ gate).
    iq_ok : ndarray of bool, shape (U,), or None
        The IQ gate passed (or could not check); None: no IQ gate.
    """

    device_id: npt.NDArray[np.int64]
    nearest_device_id: npt.NDArray[np.int64]
    score: npt.NDArray[np.float64]
    threshold: float
    cfo_hz: npt.NDArray[np.float64]
    cfo_ok: npt.NDArray[np.bool_]
    iq_z: npt.NDArray[np.float64] | None = field(default=None, kw_only=True)
    iq_ok: npt.NDArray[np.bool_] | None = field(default=None, kw_only=True)

    def __len__(self) -> int:
        return int(self.device_id.size)

    @property
    def accepted(self) -> npt.NDArray[np.bool_]:
        """(U,) True where the unit is accepted as an enrolled device."""
        return self.device_id >= 0

    @property
    def verdict(self) -> list[str]:
        """``"accept"`` or ``"rogue"`` per unit."""
        return [ACCEPT if a else ROGUE for a in self.accepted.tolist()]

    @property
    def decision(self) -> list[int | str]:
        """The enrolled device id per unit, or ``"rogue"``."""
        return [int(d) if d >= 0 else ROGUE for d in self.device_id.tolist()]

    @property
    def reason(self) -> list[str | None]:
        """Why each rogue is one: the checks it failed joined by ``+`` (``score``, ``cfo``, ``iq``, e.g.
        ``score+cfo``); None for accepted units."""
        failed = [self.score > self.threshold, ~self.cfo_ok]
        failed.append(np.zeros(len(self), bool) if self.iq_ok is None else ~self.iq_ok)
        names = ("score", "cfo", "iq")
        return [
            None if a else "+".join(n for n, f in zip(names, fs, strict=True) if f)
            for a, *fs in zip(self.accepted.tolist(), *(f.tolist() for f in failed), strict=True)
        ]


@dataclass(frozen=True)
class FusedDecisions(Verdicts):
    """Decisions over G groups of ``packets_per_decision`` consecutive packets of one transmitter (the
    :class:`Verdicts` fields are per group; ``threshold`` is the one of groups of M packets).

    Attributes
    ----------
    packets_per_decision : int
        M.
    members : ndarray of int64, shape (G, M)
        The packets (input positions) of each group.
    group : ndarray of int64, shape (N,)
        The group of each packet, -1 for a packet in no complete group.
    """

    packets_per_decision: int
    members: npt.NDArray[np.int64]
    group: npt.NDArray[np.int64]


@dataclass(frozen=True)
class Decisions(Verdicts):
    """Single-packet decisions of N packets (the :class:`Verdicts` fields are per packet), and fused ones when
    asked for.

    Attributes
    ----------
    receiver_offset_hz : float
        The receiver offset the CFO gate subtracted, Hz.
    fused : FusedDecisions or None
        Multi-packet decisions (``packets_per_decision > 1``).
    unknown : ndarray of bool, shape (N,), or None
        Rejected packets below the SNR floor: verdict and decision ``"unknown"`` instead of ``"rogue"``
        (:meth:`with_snr_floor`; None: no floor).
    """

    receiver_offset_hz: float = 0.0
    fused: FusedDecisions | None = None
    unknown: npt.NDArray[np.bool_] | None = None

    def with_snr_floor(self, snr_db: npt.ArrayLike, min_snr_db: float | None) -> Decisions:
        """These decisions with the rejected packets whose SNR (dB, shape (N,)) is below ``min_snr_db`` called
        ``"unknown"`` (module docstring); unchanged for ``min_snr_db=None``. A NaN SNR is not below it."""
        if min_snr_db is None:
            return self
        snr = np.asarray(snr_db, np.float64).reshape(-1)
        if snr.size != len(self):
            raise ConfigError(f"snr_db has {snr.size} entries for {len(self)} packets")
        return dataclasses.replace(self, unknown=~self.accepted & (snr < float(min_snr_db)))

    @property
    def verdict(self) -> list[str]:
        """``"accept"``, ``"rogue"`` or ``"unknown"`` per packet."""
        base = Verdicts.verdict.fget(self)
        if self.unknown is None:
            return base
        return [UNKNOWN if u else v for v, u in zip(base, self.unknown.tolist(), strict=True)]

    @property
    def decision(self) -> list[int | str]:
        """The enrolled device id per packet, ``"rogue"`` or ``"unknown"``."""
        return [int(d) if d >= 0 else v for d, v in zip(self.device_id.tolist(), self.verdict, strict=True)]

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per packet: ``decision`` (device id or ``"rogue"``), ``verdict``, ``device``,
        ``nearest_device``, ``score``, ``cfo_hz``, ``cfo_ok``, ``iq_z``, ``iq_ok`` (None without an IQ gate),
        ``reason``; with fused decisions also
        ``fused_group``, ``fused_decision``, ``fused_device``, ``fused_nearest_device``, ``fused_score``
        (None for a packet in no complete group)."""
        out = []
        reasons, decision, verdict = self.reason, self.decision, self.verdict
        fused_decision = None if self.fused is None else self.fused.decision
        for i in range(len(self)):
            rec: dict[str, Any] = {
                "decision": decision[i],
                "verdict": verdict[i],
                "device": int(self.device_id[i]) if self.device_id[i] >= 0 else None,
                "nearest_device": int(self.nearest_device_id[i]),
                "score": float(self.score[i]),
                "cfo_hz": _json_float(self.cfo_hz[i]),
                "cfo_ok": bool(self.cfo_ok[i]),
                "iq_z": None if self.iq_z is None else _json_float(self.iq_z[i]),
                "iq_ok": None if self.iq_ok is None else bool(self.iq_ok[i]),
                "reason": reasons[i],
            }
            f = self.fused
            if f is not None:
                g = int(f.group[i])
                ok = g >= 0
                rec |= {
                    "fused_group": g if ok else None,
                    "fused_decision": fused_decision[g] if ok else None,
                    "fused_device": int(f.device_id[g]) if ok and f.device_id[g] >= 0 else None,
                    "fused_nearest_device": int(f.nearest_device_id[g]) if ok else None,
                    "fused_score": float(f.score[g]) if ok else None,
                }
            out.append(rec)
        return out


def _json_float(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


# -- the threshold ---------------------------------------------------------------------------------------
def current_threshold(
    registry: Registry,
    index: ReferenceIndex,
    *,
    far: float | None = None,
    devices: list[DeviceRecord] | None = None,
) -> Threshold:
    """The registry's operating threshold, chosen again (and stored) when it is missing, was set before the
    last enrollment, or was chosen for another ``far``, another k than ``index.k`` or another score than
    ``index.score`` (a threshold stored without one was chosen on the ``"knn"`` score).

    Parameters
    ----------
    registry : Registry
    index : ReferenceIndex
        The registry's references (:meth:`Authenticator.from_registry` reads them).
    far : float, optional
        False-accept rate asked for; None: the stored threshold's, else :data:`DEFAULT_FAR`.
    devices : list of DeviceRecord, optional
        The registry's devices, when already read.
    """
    stored = registry.threshold
    devices = registry.devices() if devices is None else devices
    last = max((d.enrolled_at for d in devices), default=None)
    want = far if far is not None else (stored.far if stored is not None else DEFAULT_FAR)
    if (
        stored is not None
        and stored.k == index.k
        and (stored.score or "knn") == index.score
        and abs(stored.far - want) <= 1e-12 * want
        and (last is None or stored.set_at >= last)
    ):
        return stored
    choice = choose_threshold(index, want)
    log.info(
        "%s: threshold %.6g for FAR %g chosen from %d enrollment packets of %d devices (estimated FRR %.4f)",
        registry.label,
        choice.value,
        want,
        choice.n_impostor,
        choice.n_devices,
        choice.frr_estimate,
    )
    return registry.set_threshold(choice.value, far=want, method=choice.method, k=index.k, score=index.score)


# -- the authenticator -----------------------------------------------------------------------------------
class Authenticator:
    """A registry's devices, threshold, CFO gate and IQ gate, ready to decide packets (module docstring).

    Build it with :meth:`from_registry`; :meth:`decide` takes embeddings, so any extractor's output (or
    synthetic vectors) can be decided.

    Parameters
    ----------
    index : ReferenceIndex
        The enrolled references and the k of the score.
    threshold : float
        Accept scores at most this.
    gate : CfoGate or None
        The devices' CFO windows (None: no CFO gate); its ``device_ids`` are a subset of the index's.
    far : float, optional
        The false-accept rate ``threshold`` was chosen for: multi-packet decisions get their threshold for
        it (:meth:`fused_threshold`).
    calibrate_receiver : bool
        Estimate a common receiver offset from each call's accepted packets before gating.
    iq_gate : IqGate or None
        The devices' IQ image and leakage statistics (None: no IQ gate); its ``device_ids`` are a subset of
        the index's.
    """

    def __init__(
        self,
        index: ReferenceIndex,
        threshold: float,
        gate: CfoGate | None = None,
        *,
        far: float | None = None,
        calibrate_receiver: bool = True,
        iq_gate: IqGate | None = None,
    ) -> None:
        self.index = index
        self.threshold = float(threshold)
        self.far = None if far is None else float(far)
        self._fused_thresholds: dict[int, float] = {}
        self.gate = gate
        self.calibrate_receiver = bool(calibrate_receiver)
        self._gate_pos = _gate_positions(index, None if gate is None else gate.device_ids, "CFO gate")
        self.iq_gate = iq_gate
        self._iq_pos = _gate_positions(index, None if iq_gate is None else iq_gate.device_ids, "IQ gate")

    @classmethod
    def from_registry(
        cls,
        registry: Registry,
        *,
        k: int = DEFAULT_K,
        far: float | None = None,
        n_candidates: int = DEFAULT_CANDIDATES,
        gate_params: GateParams | None = None,
        cfo_gate: bool = True,
        calibrate_receiver: bool = True,
        drift_tracking: bool = False,
        score: str = DEFAULT_SCORE,
        iq_gate: bool = True,
        iq_tolerance: float = DEFAULT_IQ_TOLERANCE,
    ) -> Authenticator:
        """Read a registry's references and devices; take its threshold (choosing it when needed, see
        :func:`current_threshold`).

        Parameters
        ----------
        registry : Registry
        k : int
            Neighbours of the score.
        far : float, optional
            False-accept rate of the threshold (None: the stored one's, else :data:`DEFAULT_FAR`).
        n_candidates : int
            Devices searched per packet (:class:`~lorarffi.rffi.knn.ReferenceIndex`).
        gate_params : GateParams, optional
            The CFO windows' parameters (default ``GateParams()`` at the devices' carrier: margin 2.5 ppm).
        cfo_gate : bool
            Apply the CFO gate.
        calibrate_receiver : bool
            Estimate a common receiver offset per call.
        drift_tracking : bool
            Let :meth:`track` move the devices' CFO windows (module docstring).
        score : {"cohort", "knn"}
            What packets are decided on (:mod:`lorarffi.rffi.knn`); the stored threshold is chosen again when
            it was chosen for the other.
        iq_gate : bool
            Apply the IQ gate to the devices enrolled with IQ statistics.
        iq_tolerance : float
            The IQ gate's tolerance, standard errors.
        """
        ids, emb = registry.reference_embeddings()
        if ids.size == 0:
            raise ConfigError(f"{registry.label}: no device is enrolled")
        index = ReferenceIndex(ids, emb, k=k, n_candidates=n_candidates, score=score)
        devices = registry.devices()
        threshold = current_threshold(registry, index, far=far, devices=devices)
        gate = _cfo_gate(devices, gate_params, drift_tracking) if cfo_gate else None
        iq = _iq_gate(devices, iq_tolerance) if iq_gate else None
        return cls(index, threshold.value, gate, far=threshold.far, calibrate_receiver=calibrate_receiver,
                   iq_gate=iq)

    def decide(
        self,
        embeddings: npt.ArrayLike,
        cfo_hz: npt.ArrayLike | None = None,
        *,
        packets_per_decision: int = 1,
        transmitter_ids: npt.ArrayLike | None = None,
        impairments: TxImpairments | None = None,
    ) -> Decisions:
        """Decide N packets from their embeddings (module docstring).

        Parameters
        ----------
        embeddings : array_like of float, shape (N, D)
            The packets' embeddings (:meth:`~lorarffi.rffi.embedding.Embedder.embed`).
        cfo_hz : array_like of float, shape (N,), optional
            Their CFO estimates, Hz (None or NaN: the gate passes them).
        packets_per_decision : int
            M: also decide groups of M packets of one transmitter (1: single packets only).
        transmitter_ids : array_like of int, shape (N,), optional
            Who sent each packet, when known (labelled data): how groups are formed; default each packet's
            nearest device.
        impairments : TxImpairments, optional
            Their IQ image and carrier leakage (:meth:`~lorarffi.rffi.embedding.Embedder.tx_impairments`;
            None: the IQ gate passes them).
        """
        q = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        n = q.shape[0]
        cfo = np.full(n, np.nan) if cfo_hz is None else np.asarray(cfo_hz, dtype=np.float64).reshape(-1)
        if cfo.size != n:
            raise ConfigError(f"cfo_hz has {cfo.size} entries for {n} packets")
        m = int(packets_per_decision)
        if m < 1:
            raise ConfigError(f"packets_per_decision={packets_per_decision!r} is not valid: use 1 or more")
        if impairments is not None and len(impairments) != n:
            raise ConfigError(f"impairments has {len(impairments)} entries for {n} packets")
        if n == 0:
            empty = np.zeros(0, np.int64)
            iq_z, iq_ok = self._iq_check(None, empty)
            return Decisions(empty, empty, np.zeros(0), self.threshold, cfo, np.zeros(0, bool),
                             iq_z=iq_z, iq_ok=iq_ok)
        near = self.index.search(q)
        passed = near.score <= self.threshold
        if self.calibrate_receiver and self.gate is not None:
            gpos = self._gate_pos[near.index]
            self.gate.calibrate_receiver(cfo, gpos, passed.astype(np.float64))
        cfo_ok = self._cfo_ok(cfo, near.index)
        iq_z, iq_ok = self._iq_check(impairments, near.index)
        device = np.where(passed & cfo_ok & (True if iq_ok is None else iq_ok), near.device_id, -1)
        device = device.astype(np.int64)
        fused = None
        if m > 1:
            who = near.device_id if transmitter_ids is None else np.asarray(transmitter_ids).reshape(-1)
            if who.size != n:
                raise ConfigError(f"transmitter_ids has {who.size} entries for {n} packets")
            fused = self._fuse(q, cfo, decision_groups(who, m), m, impairments)
        return Decisions(
            device,
            near.device_id,
            near.score,
            self.threshold,
            cfo,
            cfo_ok,
            receiver_offset_hz=0.0 if self.gate is None else float(self.gate.receiver_offset_hz),
            fused=fused,
            iq_z=iq_z,
            iq_ok=iq_ok,
        )

    def _iq_check(
        self, impairments: TxImpairments | None, index: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.bool_] | None]:
        """(N,) each packet's IQ distance to device ``index`` and whether the IQ gate passes it; (None, None)
        without an IQ gate."""
        if self.iq_gate is None:
            return None, None
        measured = TxImpairments.unknown(index.size) if impairments is None else impairments
        z = self.iq_gate.distance(measured, self._iq_pos[index])
        return z, self.iq_gate.passes(z)

    def _cfo_ok(self, cfo_hz: npt.NDArray[np.float64], index: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """(N,) whether each CFO lies in device ``index``'s window (True where it cannot be checked)."""
        if self.gate is None:
            return np.ones(cfo_hz.size, bool)
        g = self._gate_pos[index]
        has = (g >= 0) & np.isfinite(cfo_hz)
        gg = np.maximum(g, 0)
        offset = cfo_hz - self.gate.receiver_offset_hz - self.gate.center_hz[gg]
        inside = np.abs(offset) <= self.gate.lambda_hz[gg]
        return np.where(has, inside, True)

    @property
    def tracking(self) -> bool:
        """Whether :meth:`track` moves the devices' CFO windows (a CFO gate with drift tracking on)."""
        return self.gate is not None and self.gate.params.tracking

    def refresh_cfo(self, registry: Registry) -> None:
        """Take the devices' CFO centres and spreads as the registry stores them now (what every process
        sharing it has tracked so far; one light query). The gate's re-acquisition counts and receiver
        offset stay this authenticator's own."""
        gate = self.gate
        if gate is None:
            return
        stored = registry.cfo_centres()
        for g, device_id in enumerate(gate.device_ids.tolist()):
            if device_id in stored:
                gate.center_hz[g], gate.tracked_std_hz[g] = stored[device_id]

    def track(self, decisions: Decisions) -> dict[int, CfoMove]:
        """Feed the confidently accepted packets of ``decisions`` (made by :meth:`decide`) to drift tracking
        (module docstring); no-op without a CFO gate or with tracking off.

        Returns
        -------
        dict
            Device id -> how the packets moved its CFO centre and spread (Hz, from and to), for each device
            they moved.
        """
        gate = self.gate
        if gate is None or not self.tracking or len(decisions) == 0:
            return {}
        pos = np.searchsorted(gate.device_ids, decisions.device_id)
        found = (decisions.device_id >= 0) & (pos < gate.device_ids.size)
        found &= gate.device_ids[np.minimum(pos, gate.device_ids.size - 1)] == decisions.device_id
        confident = found & (decisions.score <= TRACK_SCORE_RATIO * self.threshold)
        before = (gate.center_hz.copy(), gate.tracked_std_hz.copy())
        gate.update(decisions.cfo_hz, np.where(found, pos, -1), confident.astype(np.float64))
        moved = (gate.center_hz != before[0]) | (gate.tracked_std_hz != before[1])
        return {
            int(gate.device_ids[g]): CfoMove(
                float(before[0][g]),
                float(before[1][g]),
                float(gate.center_hz[g]),
                float(gate.tracked_std_hz[g]),
            )
            for g in np.flatnonzero(moved)
        }

    def fused_threshold(self, packets_per_decision: int) -> float:
        """The score threshold of decisions on groups of M packets, for the same false-accept rate as the
        single-packet one (:func:`~lorarffi.rffi.threshold.choose_threshold` with ``packets_per_decision``;
        chosen once per M and kept)."""
        m = int(packets_per_decision)
        if m == 1:
            return self.threshold
        if m not in self._fused_thresholds:
            if self.far is None:
                raise ConfigError(
                    "this authenticator was given no false-accept rate to choose a fused threshold"
                )
            self._fused_thresholds[m] = choose_threshold(self.index, self.far, packets_per_decision=m).value
        return self._fused_thresholds[m]

    def _fuse(
        self,
        q: npt.NDArray[np.float32],
        cfo: npt.NDArray[np.float64],
        members: npt.NDArray[np.int64],
        m: int,
        impairments: TxImpairments | None,
    ) -> FusedDecisions:
        near = self.index.search_groups(q, members)
        group_cfo = np.full(members.shape[0], np.nan)
        for g, rows in enumerate(members):
            known = cfo[rows][np.isfinite(cfo[rows])]
            if known.size:
                group_cfo[g] = float(np.median(known))
        cfo_ok = self._cfo_ok(group_cfo, near.index)
        group_iq = None if impairments is None else pooled(impairments, members)
        iq_z, iq_ok = self._iq_check(group_iq, near.index)
        threshold = self.fused_threshold(m)
        ok = (near.score <= threshold) & cfo_ok & (True if iq_ok is None else iq_ok)
        device = np.where(ok, near.device_id, -1).astype(np.int64)
        group = np.full(q.shape[0], -1, np.int64)
        group[members.reshape(-1)] = np.repeat(np.arange(members.shape[0]), m)
        return FusedDecisions(
            device, near.device_id, near.score, threshold, group_cfo, cfo_ok, m, members, group,
            iq_z=iq_z, iq_ok=iq_ok,
        )


def _gate_positions(
    index: ReferenceIndex, gate_ids: npt.NDArray[np.int64] | None, what: str
) -> npt.NDArray[np.int64]:
    """(len(index),) each index position's position among a gate's devices (-1: not in the gate)."""
    out = np.full(len(index), -1, np.int64)
    if gate_ids is None:
        return out
    pos = np.searchsorted(index.device_ids, gate_ids)
    if np.any(pos >= len(index)) or np.any(index.device_ids[np.minimum(pos, len(index) - 1)] != gate_ids):
        raise ConfigError(f"the {what} holds devices that are not enrolled")
    out[pos] = np.arange(gate_ids.size)
    return out


def _cfo_gate(devices: list[DeviceRecord], params: GateParams | None, tracking: bool) -> CfoGate | None:
    """The CFO windows of the devices enrolled with CFO statistics (None when there are none), with drift
    tracking on or off."""
    known = [d for d in devices if d.cfo_mean_hz is not None]
    if not known:
        return None
    if params is None:
        carriers = [d.carrier_hz for d in known if d.carrier_hz is not None]
        params = GateParams(carrier_hz=float(np.median(carriers)) if carriers else None)
    params = dataclasses.replace(params, tracking=tracking)
    return CfoGate(
        [d.device_id for d in known],
        [d.cfo_mean_hz for d in known],
        [d.cfo_std_hz for d in known],
        [d.cfo_min_hz for d in known],
        [d.cfo_max_hz for d in known],
        [d.n_packets for d in known],
        params,
    )


def _iq_gate(devices: list[DeviceRecord], tolerance: float) -> IqGate | None:
    """The IQ statistics of the devices enrolled with them by today's fit (None when there are none); devices
    whose statistics another fit made are left out (the gate passes their packets), with a warning."""
    measured = [d for d in devices if all(getattr(d, c) is not None for c in IQ_COLUMNS)]
    known = [d for d in measured if d.iq_fit == IQ_FIT]
    if len(known) < len(measured):
        other = sorted({str(d.iq_fit) for d in measured if d.iq_fit != IQ_FIT})
        log.warning(
            "%d device(s) have IQ statistics of another IQ fit (%s, not %s): the IQ gate passes their "
            "packets until they are enrolled again", len(measured) - len(known), ", ".join(other), IQ_FIT,
        )
    if not known:
        return None
    return IqGate(
        [d.device_id for d in known],
        [IqStatistics(**{c: getattr(d, c) for c in IQ_COLUMNS}) for d in known],
        tolerance=tolerance,
    )


# -- the one call ---------------------------------------------------------------------------------------
def check_packet_input(registry: Registry, packet_input: str) -> bool:
    """Warn in one log line when ``registry``'s devices were enrolled from packets read another way than
    ``packet_input`` (``"preamble"`` or ``"whole_packets"``): its references and threshold come from
    fingerprints of another noise level. Returns whether they match (or the registry does not say)."""
    enrolled = registry.packet_input
    if enrolled is None or enrolled == packet_input:
        return True
    words = {"preamble": "their preamble alone", "whole_packets": "whole packets", "mixed": "both ways"}
    log.warning("%s: its devices were enrolled from %s and these packets are read from %s: its threshold and "
                "references fit packets read as enrolled (--whole-packets reads them whole)",
                registry.label, words.get(enrolled, enrolled), words.get(packet_input, packet_input))
    return False


def open_authenticator(
    embedder: Embedder,
    registry: Registry,
    *,
    k: int = DEFAULT_K,
    far: float | None = None,
    cfo_gate: bool = True,
    drift_tracking: bool = False,
    packet_input: str | None = "preamble",
    score: str = DEFAULT_SCORE,
    iq_gate: bool = True,
) -> Authenticator:
    """The :class:`Authenticator` of a registry for the model it is bound to (a registry of another model is
    refused in one line): its references, threshold (:func:`current_threshold`) and the CFO gate with the
    model's carrier and margin.

    Parameters
    ----------
    embedder : Embedder
    registry : Registry
    k : int
        Neighbours of the score.
    far : float, optional
        False-accept rate of the threshold (None: the stored one's, else :data:`DEFAULT_FAR`).
    cfo_gate : bool
        Apply the CFO gate (False: the embedding score alone decides).
    drift_tracking : bool
        Let :func:`decide_packets` track the devices' CFO drift (module docstring).
    packet_input : {"preamble", "whole_packets"} or None
        How the packets to decide are read (:func:`check_packet_input`; None: the caller checks once it
        knows).
    score : {"cohort", "knn"}
        What packets are decided on (:mod:`lorarffi.rffi.knn`).
    iq_gate : bool
        Apply the IQ gate (module docstring).
    """
    check_bound(embedder, registry)
    if packet_input is not None:
        check_packet_input(registry, packet_input)
    return Authenticator.from_registry(
        registry,
        k=k,
        far=far,
        gate_params=_embedder_gate_params(embedder),
        cfo_gate=cfo_gate,
        drift_tracking=drift_tracking,
        score=score,
        iq_gate=iq_gate,
    )


def decide_packets(
    embedder: Embedder,
    authenticator: Authenticator,
    registry: Registry,
    preambles: npt.ArrayLike,
    *,
    cfo_hz: npt.ArrayLike | None = None,
    packets_per_decision: int = 1,
    transmitter_ids: npt.ArrayLike | None = None,
    source: str = "",
    start_sample: npt.ArrayLike | None = None,
    snr_db: npt.ArrayLike | None = None,
    batch_size: int = 64,
    audit: bool = True,
    min_snr_db: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Decisions:
    """Decide a batch of packets with an open authenticator (the decisions of
    :func:`~lorarffi.rffi.classify.classify_preambles`, which ``lora-rffi classify --registry`` and
    ``authenticate`` make); append every decision to the registry's audit log and store the CFO drift the
    batch tracked (when the authenticator tracks it), in one transaction. :func:`authenticate` and the live
    registry stage (:class:`~lorarffi.live.stages.RegistryStage`) decide through it.

    Parameters are those of :func:`authenticate`; ``authenticator`` is :func:`open_authenticator`'s;
    ``min_snr_db`` calls rejected packets below it ``unknown`` (:meth:`Decisions.with_snr_floor`; needs
    ``snr_db``); ``progress`` is called with the number of packets the network has just embedded (a
    progress bar's advance).
    """
    if min_snr_db is not None and snr_db is None:
        raise ConfigError(f"min_snr_db={min_snr_db!r} needs the packets' snr_db")
    x = np.asarray(preambles)
    cfo = np.full(x.shape[0], np.nan) if cfo_hz is None else cfo_hz
    if authenticator.tracking:
        authenticator.refresh_cfo(registry)  # the drift every process sharing the registry has stored
    decisions = classify_preambles(  # the decisions `lora-rffi classify --registry` makes
        embedder,
        x,
        cfo,
        authenticator=authenticator,
        batch_size=batch_size,
        packets_per_decision=packets_per_decision,
        transmitter_ids=transmitter_ids,
        progress=progress,
    ).registry.with_snr_floor(snr_db, min_snr_db)
    rows = audit_rows(decisions, source=source, start_sample=start_sample, snr_db=snr_db) if audit else []
    registry.record_decisions(rows, cfo_tracked=authenticator.track(decisions))
    return decisions


def authenticate(
    embedder: Embedder,
    registry: Registry,
    preambles: npt.ArrayLike,
    *,
    cfo_hz: npt.ArrayLike | None = None,
    k: int = DEFAULT_K,
    far: float | None = None,
    packets_per_decision: int = 1,
    transmitter_ids: npt.ArrayLike | None = None,
    source: str = "",
    start_sample: npt.ArrayLike | None = None,
    snr_db: npt.ArrayLike | None = None,
    cfo_gate: bool = True,
    batch_size: int = 64,
    audit: bool = True,
    packet_input: str = "preamble",
    score: str = DEFAULT_SCORE,
    iq_gate: bool = True,
) -> Decisions:
    """Authenticate packets against a registry and append every decision to its audit log
    (:func:`open_authenticator`, then :func:`decide_packets`).

    Parameters
    ----------
    embedder : Embedder
        The model the registry is bound to (another is refused in one line).
    registry : Registry
    preambles : array_like of complex64, shape (N, L)
        Packets in the model's view (``embedder.preprocess(iq).iq``, ``embedder.packet_preambles(packets)``).
    cfo_hz : array_like of float, shape (N,), optional
        Their CFO estimates, Hz (the CFO gate's input; None: no gate).
    k : int
        Neighbours of the score.
    far : float, optional
        False-accept rate of the threshold (:func:`current_threshold`).
    packets_per_decision : int
        M > 1 also decides groups of M packets of one transmitter (module docstring).
    transmitter_ids : array_like of int, shape (N,), optional
        Who sent each packet, when known: how groups are formed.
    source : str
        Where the packets came from (the audit log's ``source``).
    start_sample : array_like of int, shape (N,), optional
        Each packet's first preamble sample in ``source``.
    snr_db : array_like of float, shape (N,), optional
        Each packet's SNR estimate, dB.
    cfo_gate : bool
        Apply the CFO gate (False: the embedding score alone decides).
    batch_size : int
        Packets per network call.
    audit : bool
        Append the decisions to the audit log (one transaction).
    packet_input : {"preamble", "whole_packets"}
        How ``preambles`` were read (:func:`check_packet_input`).
    score : {"cohort", "knn"}
        What packets are decided on (:mod:`lorarffi.rffi.knn`).
    iq_gate : bool
        Apply the IQ gate (False: no check of the IQ image and leakage).

    Returns
    -------
    Decisions
    """
    auth = open_authenticator(
        embedder, registry, k=k, far=far, cfo_gate=cfo_gate, packet_input=packet_input, score=score,
        iq_gate=iq_gate,
    )
    return decide_packets(
        embedder,
        auth,
        registry,
        preambles,
        cfo_hz=cfo_hz,
        packets_per_decision=packets_per_decision,
        transmitter_ids=transmitter_ids,
        source=source,
        start_sample=start_sample,
        snr_db=snr_db,
        batch_size=batch_size,
        audit=audit,
    )


def _embedder_gate_params(embedder: Embedder) -> GateParams | None:
    """The model's gate parameters (its carrier and margin), or None for the defaults."""
    return (
        None if embedder.gate is None else dataclasses.replace(embedder.gate.params, receiver_offset_ppm=0.0)
    )


def audit_rows(
    decisions: Decisions,
    *,
    source: str = "",
    start_sample: npt.ArrayLike | None = None,
    snr_db: npt.ArrayLike | None = None,
) -> list[AuditRow]:
    """The audit-log rows of a call: one per packet, then one per fused decision (source ``"... [fused M]"``,
    start sample and SNR of the group's first packet)."""
    n = len(decisions)
    start = [None] * n if start_sample is None else [int(s) for s in np.asarray(start_sample).reshape(-1)]
    snr = np.full(n, np.nan) if snr_db is None else np.asarray(snr_db, np.float64).reshape(-1)
    if len(start) != n or snr.size != n:
        raise ConfigError(f"start_sample and snr_db need {n} entries, one per packet")
    verdict = decisions.verdict
    rows = [
        AuditRow(
            verdict=verdict[i],
            device_id=int(d) if d >= 0 else None,
            score=float(s),
            source=source,
            start_sample=start[i],
            cfo_hz=float(f),
            snr_db=float(snr[i]),
        )
        for i, (d, s, f) in enumerate(
            zip(decisions.device_id, decisions.score, decisions.cfo_hz, strict=True)
        )
    ]
    f = decisions.fused
    if f is not None:
        tag = f"{source} [fused {f.packets_per_decision}]"
        rows += [
            AuditRow(
                verdict=ACCEPT if f.device_id[g] >= 0 else ROGUE,
                device_id=int(f.device_id[g]) if f.device_id[g] >= 0 else None,
                score=float(f.score[g]),
                source=tag,
                start_sample=start[f.members[g, 0]],
                cfo_hz=float(f.cfo_hz[g]),
                snr_db=float(snr[f.members[g, 0]]),
            )
            for g in range(len(f))
        ]
    return rows


# -- figures ---------------------------------------------------------------------------------------------
def summarize(
    decisions: Decisions, true_device_ids: npt.ArrayLike | None, enrolled_ids: npt.ArrayLike
) -> dict[str, Any]:
    """Figures of a call, single-packet and fused side by side.

    Parameters
    ----------
    decisions : Decisions
    true_device_ids : array_like of int, shape (N,), or None
        Who sent each packet (None: unlabelled, the rates are None).
    enrolled_ids : array_like of int
        The registry's devices.

    Returns
    -------
    dict
        ``n_packets``; ``n_accepted``, ``n_rogue``, ``n_unknown`` (verdicts); ``n_enrolled_packets``,
        ``n_unenrolled_packets`` (labelled); ``accuracy`` (share of enrolled devices' packets given their own
        id), ``rogue_rate`` (share of the other packets called rogue), ``false_reject_rate`` (share of
        enrolled devices' packets called rogue); with fused decisions ``packets_per_decision``,
        ``fused_n_decisions`` and the same figures over groups as ``fused_*``.
    """
    out: dict[str, Any] = {
        "n_packets": len(decisions),
        "n_accepted": int(decisions.accepted.sum()),
        "n_rogue": decisions.verdict.count(ROGUE),
        "n_unknown": decisions.verdict.count(UNKNOWN),
    }
    truth = None if true_device_ids is None else np.asarray(true_device_ids, np.int64).reshape(-1)
    enrolled = np.asarray(enrolled_ids, np.int64).reshape(-1)
    out |= _rates(decisions.device_id, truth, enrolled)
    f = decisions.fused
    if f is not None:
        out["packets_per_decision"] = f.packets_per_decision
        out["fused_n_decisions"] = len(f)
        out["fused_threshold"] = f.threshold
        group_truth = None if truth is None else truth[f.members[:, 0]]
        if group_truth is not None and f.members.size and np.any(truth[f.members] != group_truth[:, None]):
            group_truth = None  # groups of mixed transmitters (formed by nearest device): no fused truth
        out |= {f"fused_{k}": v for k, v in _rates(f.device_id, group_truth, enrolled, "decisions").items()}
    return out


def _rates(
    device: npt.NDArray[np.int64],
    truth: npt.NDArray[np.int64] | None,
    enrolled: npt.NDArray[np.int64],
    unit: str = "packets",
) -> dict[str, Any]:
    if truth is None:
        return {
            f"n_enrolled_{unit}": None,
            f"n_unenrolled_{unit}": None,
            "accuracy": None,
            "rogue_rate": None,
            "false_reject_rate": None,
        }
    if truth.size != device.size:
        raise ConfigError(f"{truth.size} labels for {device.size} decisions")
    legit = np.isin(truth, enrolled)
    n_legit, n_other = int(legit.sum()), int((~legit).sum())
    return {
        f"n_enrolled_{unit}": n_legit,
        f"n_unenrolled_{unit}": n_other,
        "accuracy": float(np.mean(device[legit] == truth[legit])) if n_legit else None,
        "rogue_rate": float(np.mean(device[~legit] < 0)) if n_other else None,
        "false_reject_rate": float(np.mean(device[legit] < 0)) if n_legit else None,
    }
