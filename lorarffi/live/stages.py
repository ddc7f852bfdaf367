"""Decision stages: a batch of detected packets in, one decision record per packet out.

:class:`DetectionOnly` reports every packet without a model; :class:`ClassifierStage` classifies the batch
with a trained model directory (spectrogram, CNN, CFO-gated hybrid decision with drift tracking). Any
object with ``decide(packets) -> list[DecisionRecord]`` is a stage (an enrollment registry slots in here).
Stages leave ``latency_ms`` unset: the pipeline times each decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

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

    The batch goes through the classifier in one call (:meth:`~lorarffi.rffi.inference.Classifier.
    classify_packets`: the packets' fingerprint windows in the view the model was trained on, and their CFO
    estimates); each record carries the hybrid decision (``device``, ``verdict``, ``confidence``) and the
    CNN's own (``cnn_device``).

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
        dec = self.classifier.classify_packets(packets, track=self.track)
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
