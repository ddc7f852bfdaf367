"""Decision stages: a batch of detected packets in, one decision record per packet out.

:class:`DetectionOnly` reports every packet without a model; :class:`ClassifierStage` classifies the batch
with a trained model directory (spectrogram, CNN, CFO-gated hybrid decision with drift tracking). Any
object with ``decide(packets) -> list[DecisionRecord]`` is a stage (an enrollment registry slots in here).
Stages leave ``latency_ms`` unset: the pipeline times each decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from lorarffi.errors import ConfigError
from lorarffi.live.decision import DecisionRecord

__all__ = ["DecisionStage", "DetectionOnly", "ClassifierStage"]


class DecisionStage(Protocol):
    """Turns a batch of detected packets (:class:`~lorarffi.dsp.packet.Packet`) into one
    :class:`~lorarffi.live.decision.DecisionRecord` each, in order."""

    def decide(self, packets: Sequence[Any]) -> list[DecisionRecord]: ...


class DetectionOnly:
    """No model: every packet is reported with ``device=None`` and ``verdict="detected"``."""

    def decide(self, packets: Sequence[Any]) -> list[DecisionRecord]:
        return [DecisionRecord.for_packet(p, device=None, verdict="detected") for p in packets]


class ClassifierStage:
    """Decisions by a trained model directory (:func:`lorarffi.rffi.inference.load_classifier`).

    The batch's preambles (N, L) and CFO estimates (N,) go through the classifier in one call; each record
    carries the hybrid decision (``device``, ``verdict``, ``confidence``) and the CNN's own (``cnn_device``).

    Parameters
    ----------
    classifier : Classifier
    track : bool
        Feed confidently accepted packets to the gate's drift tracking (when the model's tracking is on;
        :meth:`~lorarffi.rffi.inference.Classifier.set_tracking` switches it).
    """

    def __init__(self, classifier: Any, *, track: bool = True) -> None:
        self.classifier = classifier
        self.track = track

    def decide(self, packets: Sequence[Any]) -> list[DecisionRecord]:
        if not packets:
            return []
        model_fs_hz = float(self.classifier.lora.fs_hz)
        if not math.isclose(float(packets[0].preamble_fs_hz), model_fs_hz, rel_tol=1e-9):
            raise ConfigError(
                f"the detector delivers preambles at {packets[0].preamble_fs_hz:g} Hz but the model "
                f"was trained at {model_fs_hz:g} Hz: use a sample rate matching the model"
            )
        preambles = np.stack([np.asarray(p.preamble, np.complex64) for p in packets])
        cfo_hz = np.array([p.cfo_hz for p in packets], np.float64)
        dec = self.classifier.classify(preambles, cfo_hz, track=self.track)
        return [
            DecisionRecord.for_packet(p, device=d, verdict=v, cnn_device=c, confidence=q)
            for p, d, v, c, q in zip(
                packets,
                dec.device_id.tolist(),
                dec.verdict,
                dec.cnn_device_id.tolist(),
                dec.confidence.tolist(),
                strict=True,
            )
        ]
