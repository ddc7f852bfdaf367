"""Per-packet decisions for a batch of preambles from either kind of model, and their summary and files.

The one decision path of offline work: ``lora-rffi classify`` writes these decisions, ``evaluate`` scores a
closed-set classifier's against a dataset's labels (:mod:`lorarffi.rffi.evaluate`), ``authenticate`` scores a
registry's and appends them to its audit log (:mod:`lorarffi.rffi.authenticate`).

- A closed-set model (:class:`~lorarffi.rffi.inference.Classifier`): CNN logits of the whole batch, the CFO
  gate's receiver offset calibrated on them (with tracking), then the CFO-gated hybrid decision in input
  order, ``batch_size`` packets per call so drift tracking learns between calls. Verdicts ``accept`` or
  ``unknown``; ``confidence`` is the hybrid's renormalised probability, ``score`` is NaN.
- A registry (:class:`~lorarffi.rffi.authenticate.Authenticator` over an
  :class:`~lorarffi.rffi.embedding.Embedder`): embeddings of the batch, then the K-NN score, the threshold and
  the CFO gate. Verdicts ``accept`` or ``rogue``; ``score`` is the K-NN distance, ``confidence`` is NaN.

>>> clf = load_classifier("runs/model")                               # doctest: +SKIP
>>> pre = clf.preprocess(stored_iq)                                   # doctest: +SKIP
>>> dec = classify_preambles(clf, pre.iq, pre.cfo_hz)                 # doctest: +SKIP
>>> dec.summary()["per_verdict"]                                      # doctest: +SKIP
{'accept': 118, 'unknown': 2}
"""

from __future__ import annotations

import json
import os
import pathlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from lorarffi.datasets.atomic import atomic_path
from lorarffi.errors import ConfigError
from lorarffi.rffi.embedding import Embedder
from lorarffi.rffi.inference import Classifier, Decision

if TYPE_CHECKING:
    from lorarffi.rffi.authenticate import Authenticator, Decisions

__all__ = ["PacketDecisions", "classify_preambles", "write_decisions", "DECISION_FIELDS", "OUTPUT_SUFFIXES"]

DECISION_FIELDS = (
    "packet",
    "device",
    "verdict",
    "score",
    "confidence",
    "cfo_hz",
    "snr_db",
    "start_sample",
    "label",
    "cnn_device",
    "nearest_device",
    "reason",
)
"""The fields of one packet's decision record, in the order the CSV file gives them."""
OUTPUT_SUFFIXES = (".csv", ".jsonl", ".h5")
"""The decision files :func:`write_decisions` writes, chosen by the path's suffix."""


@dataclass(frozen=True)
class PacketDecisions:
    """One decision per packet of a batch, whichever kind of model made it.

    Attributes
    ----------
    device_id : ndarray of int64, shape (N,)
        The device each packet is decided as, -1 when no device is accepted.
    verdict : list of str
        ``"accept"``; ``"unknown"`` (closed set: the CFO gate ruled every device out) or ``"rogue"``
        (registry: score above the threshold or CFO outside the window).
    score : ndarray of float64, shape (N,)
        The registry's K-NN score (mean distance to the nearest device's references); NaN for a closed set.
    confidence : ndarray of float32, shape (N,)
        The closed set's probability of the decision (0 when rejected); NaN for a registry.
    cfo_hz : ndarray of float64, shape (N,)
        The packets' CFO estimates, Hz (NaN: a row that is not a preamble at the model's parameters).
    closed_set : Decision or None
        The classifier's own decision (CNN pick, class indices), for scoring.
    registry : Decisions or None
        The authenticator's own decisions (nearest device, reasons, fused decisions), for scoring and audit.
    receiver_offset_hz : float or None
        The CFO gate's receiver offset after the batch, Hz (None: no gate).
    """

    device_id: npt.NDArray[np.int64]
    verdict: list[str]
    score: npt.NDArray[np.float64]
    confidence: npt.NDArray[np.float32]
    cfo_hz: npt.NDArray[np.float64]
    closed_set: Decision | None = None
    registry: Decisions | None = None
    receiver_offset_hz: float | None = None

    def __len__(self) -> int:
        return int(self.device_id.size)

    @classmethod
    def of_classifier(cls, decision: Decision, receiver_offset_hz: float | None = None) -> PacketDecisions:
        """A closed-set classifier's decision (:class:`~lorarffi.rffi.inference.Decision`) as packet
        decisions."""
        n = len(decision)
        return cls(
            decision.device_id,
            list(decision.verdict),
            np.full(n, np.nan),
            decision.confidence,
            decision.cfo_hz,
            closed_set=decision,
            receiver_offset_hz=receiver_offset_hz,
        )

    @classmethod
    def of_registry(cls, decisions: Decisions, receiver_offset_hz: float | None = None) -> PacketDecisions:
        """An authenticator's single-packet decisions (:class:`~lorarffi.rffi.authenticate.Decisions`) as
        packet decisions."""
        return cls(
            decisions.device_id,
            decisions.verdict,
            np.asarray(decisions.score, np.float64),
            np.full(len(decisions), np.nan, np.float32),
            decisions.cfo_hz,
            registry=decisions,
            receiver_offset_hz=receiver_offset_hz,
        )

    def to_records(
        self,
        *,
        start_sample: npt.ArrayLike | None = None,
        snr_db: npt.ArrayLike | None = None,
        labels: npt.ArrayLike | None = None,
    ) -> list[dict[str, Any]]:
        """One JSON-ready dict per packet with the keys of :data:`DECISION_FIELDS` (None where unknown).

        Parameters
        ----------
        start_sample : array_like of int, shape (N,), optional
            First preamble sample of each packet in its recording (-1: unknown).
        snr_db : array_like of float, shape (N,), optional
            SNR estimate of each packet, dB (NaN: unknown).
        labels : array_like of int, shape (N,), optional
            What the input says about each packet's sender (a dataset's device ids; -1 for packets a live run
            stored unlabelled).
        """
        n = len(self)
        start = _column(start_sample, n, "start_sample")
        snr = _column(snr_db, n, "snr_db")
        label = _column(labels, n, "labels")
        cnn = None if self.closed_set is None else self.closed_set.cnn_device_id
        near = reason = None
        if self.registry is not None:
            near, reason = self.registry.nearest_device_id, self.registry.reason
        return [
            {
                "packet": i,
                "device": int(self.device_id[i]) if self.device_id[i] >= 0 else None,
                "verdict": self.verdict[i],
                "score": _finite(self.score[i]),
                "confidence": _finite(self.confidence[i]),
                "cfo_hz": _finite(self.cfo_hz[i]),
                "snr_db": None if snr is None else _finite(snr[i]),
                "start_sample": None if start is None or start[i] < 0 else int(start[i]),
                "label": None if label is None else int(label[i]),
                "cnn_device": None if cnn is None else int(cnn[i]),
                "nearest_device": None if near is None else int(near[i]),
                "reason": None if reason is None else reason[i],
            }
            for i in range(n)
        ]

    def summary(self) -> dict[str, Any]:
        """Counts: ``n_packets``; ``per_device`` (device id as a string, or ``"none"``, -> packets decided as
        it); ``per_verdict``; ``rejected`` (packets no device was accepted for); ``unsupported`` (rows with no
        CFO estimate: not a LoRa preamble at the model's parameters, decided by the network alone)."""
        per_device = Counter("none" if d < 0 else str(d) for d in self.device_id.tolist())
        return {
            "n_packets": len(self),
            "per_device": dict(sorted(per_device.items(), key=lambda kv: (kv[0] == "none", _id_key(kv[0])))),
            "per_verdict": dict(sorted(Counter(self.verdict).items())),
            "rejected": int(np.sum(self.device_id < 0)),
            "unsupported": int(np.sum(~np.isfinite(self.cfo_hz))),
            "receiver_offset_hz": self.receiver_offset_hz,
        }


def _id_key(text: str) -> int:
    return int(text) if text.lstrip("-").isdigit() else 0


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _column(values: npt.ArrayLike | None, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    out = np.asarray(values).reshape(-1)
    if out.size != n:
        raise ConfigError(f"{name} has {out.size} entries for {n} packets")
    return out


def classify_preambles(
    model: Classifier,
    preambles: npt.ArrayLike,
    cfo_hz: npt.ArrayLike,
    *,
    authenticator: Authenticator | None = None,
    batch_size: int = 64,
    track: bool = True,
    packets_per_decision: int = 1,
    transmitter_ids: npt.ArrayLike | None = None,
    progress: Callable[[int], None] | None = None,
) -> PacketDecisions:
    """Decide every packet of a batch, in input order (module docstring).

    Parameters
    ----------
    model : Classifier
        A closed-set classifier; with ``authenticator``, the :class:`~lorarffi.rffi.embedding.Embedder` its
        registry was enrolled with.
    preambles : array_like of complex64, shape (N, L)
        Packets in the model's view (``model.preprocess(iq).iq``, ``model.packet_preambles(packets)``).
    cfo_hz : array_like of float, shape (N,)
        Their CFO estimates, Hz (NaN: not a preamble; the network decides it alone).
    authenticator : Authenticator, optional
        Decide against this registry instead of the model's closed set.
    batch_size : int
        Closed set: packets per decision call (drift tracking learns between calls); registry: packets per
        network call.
    track : bool
        Closed set: calibrate the receiver offset on the batch and let drift tracking learn (when the model's
        tracking is on).
    packets_per_decision : int
        Registry: also decide groups of M packets of one transmitter (see
        :meth:`~lorarffi.rffi.authenticate.Authenticator.decide`).
    transmitter_ids : array_like of int, shape (N,), optional
        Registry: who sent each packet, when known (how groups are formed).
    progress : callable, optional
        Called with the number of packets the network has just processed, after each chunk.

    Returns
    -------
    PacketDecisions

    Raises
    ------
    ConfigError
        ``batch_size`` below 1, lengths that disagree, or a registry with a model that cannot embed.
    """
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size!r} is not valid: use 1 or more")
    x = np.asarray(preambles)
    cfo = np.asarray(cfo_hz, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != cfo.size:
        raise ConfigError(f"{cfo.size} CFO estimates for preambles of shape {x.shape}: give one per row")
    if authenticator is not None:
        if not isinstance(model, Embedder):
            raise ConfigError("deciding against a registry needs the model as an Embedder (load_embedder)")
        return _registry_decisions(
            model, authenticator, x, cfo, batch_size, packets_per_decision, transmitter_ids, progress
        )
    return _closed_set_decisions(model, x, cfo, batch_size, track, progress)


def _closed_set_decisions(
    clf: Classifier,
    x: np.ndarray,
    cfo: npt.NDArray[np.float64],
    batch_size: int,
    track: bool,
    progress: Callable[[int], None] | None,
) -> PacketDecisions:
    n = cfo.size
    logits = clf.logits(x, progress=progress)
    if track and n:
        clf.calibrate_receiver(logits, cfo)
    if n == 0:
        decision = clf.decide(logits, cfo, track=False)
    else:
        decision = _concatenate(
            [clf.decide(logits[s : s + batch_size], cfo[s : s + batch_size], track=track)
             for s in range(0, n, batch_size)]
        )
    return PacketDecisions.of_classifier(
        decision, None if clf.gate is None else float(clf.gate.receiver_offset_hz)
    )


def _concatenate(parts: list[Decision]) -> Decision:
    return Decision(
        np.concatenate([d.device_id for d in parts]),
        [v for d in parts for v in d.verdict],
        np.concatenate([d.cnn_device_id for d in parts]),
        np.concatenate([d.confidence for d in parts]),
        np.concatenate([d.cnn_confidence for d in parts]),
        np.concatenate([d.cfo_hz for d in parts]),
        np.concatenate([d.class_index for d in parts]),
    )


def _registry_decisions(
    emb: Embedder,
    auth: Authenticator,
    x: np.ndarray,
    cfo: npt.NDArray[np.float64],
    batch_size: int,
    packets_per_decision: int,
    transmitter_ids: npt.ArrayLike | None,
    progress: Callable[[int], None] | None,
) -> PacketDecisions:
    vectors = emb.embed(x, batch_size=batch_size, progress=progress)
    iq = None if auth.iq_gate is None else emb.tx_impairments(x, cfo)
    dec = auth.decide(
        vectors, cfo, packets_per_decision=packets_per_decision, transmitter_ids=transmitter_ids,
        impairments=iq,
    )
    return PacketDecisions.of_registry(dec, None if auth.gate is None else float(dec.receiver_offset_hz))


# -- decision files --------------------------------------------------------------------------------------
def write_decisions(
    path: str | os.PathLike, records: list[dict[str, Any]], summary: dict[str, Any]
) -> pathlib.Path:
    """Write per-packet decision records to ``path``, the format chosen by its suffix.

    ``.csv``: a header of :data:`DECISION_FIELDS`, one row per packet (empty cells for unknown values);
    ``.jsonl``: one JSON object per packet, then the summary object (``"type": "summary"``); ``.h5``: one
    dataset per field under ``/decisions`` (unknown values NaN for floats, -1 for ids, empty strings), the
    summary as the JSON attribute ``summary``. The file is written under a temporary name beside ``path``
    and renamed when complete (:func:`~lorarffi.datasets.atomic.atomic_path`), so an interrupted run leaves
    no partial file.

    Raises
    ------
    ConfigError
        An unsupported suffix.
    """
    out = pathlib.Path(path)
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(
            f"{out}: unsupported output format {suffix or '(none)'}: use {', '.join(OUTPUT_SUFFIXES)}"
        )
    with atomic_path(out) as tmp:
        {".csv": _write_csv, ".jsonl": _write_jsonl, ".h5": _write_h5}[suffix](tmp, records, summary)
    return out


def _write_csv(path: pathlib.Path, records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    import csv

    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=DECISION_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)


def _write_jsonl(path: pathlib.Path, records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    with path.open("w") as f:
        for r in records:
            f.write(json.dumps({"type": "packet", **r}) + "\n")
        f.write(json.dumps({"type": "summary", **summary}) + "\n")


_H5_KINDS = {
    "packet": "i",
    "device": "i",
    "verdict": "s",
    "score": "f",
    "confidence": "f",
    "cfo_hz": "f",
    "snr_db": "f",
    "start_sample": "i",
    "label": "i",
    "cnn_device": "i",
    "nearest_device": "i",
    "reason": "s",
}


def _write_h5(path: pathlib.Path, records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        g = f.create_group("decisions")
        for name in DECISION_FIELDS:
            values = [r.get(name) for r in records]
            kind = _H5_KINDS[name]
            if kind == "i":
                data = np.array([-1 if v is None else v for v in values], np.int64)
            elif kind == "f":
                data = np.array([np.nan if v is None else v for v in values], np.float64)
            else:
                data = np.array(["" if v is None else str(v) for v in values], dtype=h5py.string_dtype())
            g.create_dataset(name, data=data)
        f.attrs["summary"] = json.dumps(summary)
        f.attrs["format"] = "lorarffi-decisions"
