"""Evaluate a model directory on stored preambles: CNN alone vs hybrid, per-device precision/recall, plots.

Stored packets go through the same preprocessing as training
(:func:`~lorarffi.rffi.preprocess.preprocess_preambles`), then through the one decision path
(:func:`~lorarffi.rffi.classify.classify_preambles`, as ``lora-rffi classify`` takes it) in file order,
``batch_size`` packets at a time, so drift tracking (when on) sees the packets in the order they were
captured. Accuracy counts the packets of devices the model knows; packets of other devices are counted apart
(``unknown_devices``; how many the gate rejected), never scored. A rejected packet counts as wrong in the
hybrid accuracy.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError
from lorarffi.rffi.classify import classify_preambles
from lorarffi.rffi.inference import Classifier, Decision
from lorarffi.rffi.preprocess import Preprocessed

__all__ = ["EvalResult", "evaluate", "write_plots"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalResult:
    """Scores of a model on labelled packets (see the module docstring)."""

    n_packets: int
    accuracy_cnn: float
    accuracy_hybrid: float
    rejected: int
    per_device: list[dict[str, Any]]
    device_ids: list[int]
    confusion_cnn: npt.NDArray[np.int64]
    confusion_hybrid: npt.NDArray[np.int64]
    unknown_devices: list[int] = field(default_factory=list)
    n_unknown_device_packets: int = 0
    unknown_device_rejected: int = 0
    n_not_preamble: int = 0  # rows failing the dechirp check (rffi.preprocess): no CFO, the CNN decides
    receiver_offset_hz: float | None = None  # the CFO gate's receiver offset after the run (None: no gate)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON object (confusion matrices as nested lists; the hybrid's last column = rejected)."""
        return {
            "n_packets": self.n_packets,
            "accuracy_cnn": self.accuracy_cnn,
            "accuracy_hybrid": self.accuracy_hybrid,
            "rejected": self.rejected,
            "device_ids": self.device_ids,
            "per_device": self.per_device,
            "unknown_devices": self.unknown_devices,
            "n_unknown_device_packets": self.n_unknown_device_packets,
            "unknown_device_rejected": self.unknown_device_rejected,
            "n_not_preamble": self.n_not_preamble,
            "receiver_offset_hz": self.receiver_offset_hz,
            "confusion_cnn": self.confusion_cnn.tolist(),
            "confusion_hybrid": self.confusion_hybrid.tolist(),
        }


def _prec_rec(conf: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    k = conf.shape[0]
    tp = np.diag(conf[:, :k]).astype(np.float64)
    pred = conf[:, :k].sum(axis=0)
    true = conf.sum(axis=1)
    precision = np.divide(tp, pred, out=np.full(k, np.nan), where=pred > 0)
    recall = np.divide(tp, true, out=np.full(k, np.nan), where=true > 0)
    return precision, recall


def score(decision: Decision, true_ids: npt.ArrayLike, model_device_ids: list[int]) -> EvalResult:
    """Score decisions against the true device ids (the file's labels)."""
    truth = np.asarray(true_ids, dtype=np.int64).reshape(-1)
    if truth.size != len(decision):
        raise ConfigError(f"{truth.size} labels for {len(decision)} decisions")
    ids = np.asarray(model_device_ids, dtype=np.int64)
    k = ids.size
    known = np.isin(truth, ids)
    unknown = sorted(set(truth[~known].tolist()))
    t = (
        np.searchsorted(ids, truth[known])
        if np.all(np.diff(ids) > 0)
        else np.array([model_device_ids.index(int(v)) for v in truth[known]], dtype=np.int64)
    )
    cnn_idx = (
        np.searchsorted(ids, decision.cnn_device_id[known])
        if np.all(np.diff(ids) > 0)
        else np.array([model_device_ids.index(int(v)) for v in decision.cnn_device_id[known]], dtype=np.int64)
    )
    hyb_idx = decision.class_index[known]
    conf_cnn = np.zeros((k, k), np.int64)
    np.add.at(conf_cnn, (t, cnn_idx), 1)
    conf_hyb = np.zeros((k, k + 1), np.int64)
    np.add.at(conf_hyb, (t, np.where(hyb_idx >= 0, hyb_idx, k)), 1)
    n = int(known.sum())
    p_cnn, r_cnn = _prec_rec(conf_cnn)
    p_hyb, r_hyb = _prec_rec(conf_hyb)
    per_device = [
        {
            "device": int(ids[i]),
            "n": int(conf_cnn[i].sum()),
            "precision_cnn": _f(p_cnn[i]),
            "recall_cnn": _f(r_cnn[i]),
            "precision_hybrid": _f(p_hyb[i]),
            "recall_hybrid": _f(r_hyb[i]),
            "rejected": int(conf_hyb[i, k]),
        }
        for i in range(k)
    ]
    return EvalResult(
        n_packets=n,
        accuracy_cnn=float(np.trace(conf_cnn) / n) if n else float("nan"),
        accuracy_hybrid=float(np.trace(conf_hyb[:, :k]) / n) if n else float("nan"),
        rejected=int(conf_hyb[:, k].sum()),
        per_device=per_device,
        device_ids=ids.tolist(),
        confusion_cnn=conf_cnn,
        confusion_hybrid=conf_hyb,
        unknown_devices=unknown,
        n_unknown_device_packets=int((~known).sum()),
        unknown_device_rejected=int(np.sum(decision.class_index[~known] < 0)),
    )


def _f(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def evaluate(
    clf: Classifier,
    iq: npt.ArrayLike | Preprocessed,
    device_ids: npt.ArrayLike,
    *,
    batch_size: int = 64,
    track: bool = True,
    source: object = "data",
    progress: Callable[[int], None] | None = None,
) -> tuple[EvalResult, Decision]:
    """Classify preambles in order and score them.

    The decisions are :func:`~lorarffi.rffi.classify.classify_preambles`'s (the one decision path), scored
    by :func:`score`.

    Parameters
    ----------
    clf : Classifier
        From :func:`~lorarffi.rffi.inference.load_classifier`; its gate's drift tracking (when on) is updated.
    iq : array_like of complex64, shape (N, L), or Preprocessed
        Aligned preambles as stored (CFO not compensated), preprocessed here as training did; or packets
        already in the model's view with their CFO estimates (a recording's detected packets:
        ``Preprocessed(clf.packet_preambles(packets), cfo_hz, is_preamble)``).
    device_ids : array_like of int, shape (N,)
        True device id of every packet.
    batch_size : int
        Packets classified per call (drift tracking updates between calls).
    track : bool
        Let drift tracking learn from the packets (when the gate's tracking is on).
    source : object
        Named in error messages.
    progress : callable, optional
        Called with the number of packets the network has just processed (a progress bar's advance).

    Returns
    -------
    result : EvalResult
    decision : Decision
        Per-packet decisions, in input order.
    """
    truth = np.asarray(device_ids, dtype=np.int64).reshape(-1)
    pre = iq if isinstance(iq, Preprocessed) else clf.preprocess(iq, source=source)
    if pre.iq.shape[0] != truth.size:
        raise ConfigError(f"{truth.size} labels for {pre.iq.shape[0]} preambles")
    decision = classify_preambles(
        clf, pre.iq, pre.cfo_hz, batch_size=batch_size, track=track, progress=progress
    ).closed_set
    result = dataclasses.replace(
        score(decision, truth, clf.device_ids),
        n_not_preamble=pre.n_not_preamble,
        receiver_offset_hz=None if clf.gate is None else clf.gate.receiver_offset_hz,
    )
    if result.unknown_devices:
        log.warning(
            "%s: devices %s are not known to the model (%d packets, not scored)",
            source,
            ", ".join("-1 (no label)" if int(d) < 0 else str(int(d)) for d in result.unknown_devices),
            result.n_unknown_device_packets,
        )
    return result, decision


def write_plots(
    out_dir: str | os.PathLike,
    result: EvalResult,
    decision: Decision,
    true_ids: npt.ArrayLike,
    clf: Classifier,
) -> list[pathlib.Path]:
    """Write ``confusion_cnn.png``, ``confusion_hybrid.png`` (counts in the cells, row share as colour) and
    ``cfo_per_device.png`` (each device's CFO against its gate window) in ``out_dir``; return the paths."""
    from lorarffi.rffi import plots

    out = pathlib.Path(out_dir)
    labels = [str(d) for d in result.device_ids]
    written = []
    for name, conf, cols, acc in (
        ("cnn", result.confusion_cnn, labels, result.accuracy_cnn),
        ("hybrid", result.confusion_hybrid, [*labels, "unknown"], result.accuracy_hybrid),
    ):
        what = "CNN alone" if name == "cnn" else "CNN + CFO gate"
        score_text = f"accuracy {100 * acc:.2f} %" if np.isfinite(acc) else "no packet of a known device"
        fig = plots.confusion_figure(
            conf, labels, cols, title=f"{what}: {score_text} ({result.n_packets} packets)"
        )
        written.append(plots.save_figure(fig, out / f"confusion_{name}.png"))
    fig = plots.cfo_per_device_figure(decision.cfo_hz, true_ids, decision.device_id, clf.gate)
    written.append(plots.save_figure(fig, out / "cfo_per_device.png"))
    return written
