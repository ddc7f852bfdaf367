"""Decision stages: a batch of detected packets in, one decision record per packet out.

:class:`DetectionOnly` reports every packet without a model; :class:`ClassifierStage` classifies the batch
with a trained model directory (spectrogram, CNN, CFO-gated hybrid decision with drift tracking);
:class:`RegistryStage` authenticates it against a device registry (an enrolled device or ``rogue``, every
decision in the registry's audit log). Any object with ``decide(packets) -> list[DecisionRecord]`` is a stage.
Stages leave ``latency_ms`` unset: the pipeline times each decision.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from lorarffi.live.decision import DecisionRecord

if TYPE_CHECKING:
    from lorarffi.dsp.config import LoRaConfig
    from lorarffi.rffi.embedding import Embedder
    from lorarffi.rffi.registry import Registry

__all__ = ["DecisionStage", "DetectionOnly", "ClassifierStage", "RegistryStage", "warm_up"]


class DecisionStage(Protocol):
    """Turns a batch of detected packets (:class:`~lorarffi.dsp.packet.Packet`) into one
    :class:`~lorarffi.live.decision.DecisionRecord` each, in order. A stage may also have ``warm_up()``: run
    once before the stream starts (see :func:`warm_up`)."""

    def decide(self, packets: Sequence[Any]) -> list[DecisionRecord]: ...


WARM_UP_BATCHES = (1, 8)  # batch sizes run through a model before the stream starts


def warm_up(stage: Any) -> None:
    """Run ``stage.warm_up()`` once, when it has one: the network's first calls (library initialisation,
    kernel selection per batch shape, memory pools) then happen before the first packet, not during it."""
    if getattr(stage, "warmed_up", False) or not hasattr(stage, "warm_up"):
        return
    stage.warm_up()
    stage.warmed_up = True


def _synthetic_preambles(lora: LoRaConfig, n: int) -> npt.NDArray[np.complex64]:
    """``n`` copies of a clean preamble of ``lora``'s up-chirps, shape (n, lora.preamble_samples)."""
    from lorarffi.dsp.chirp import upchirp

    one = np.tile(upchirp(lora), lora.preamble_symbols)[: lora.preamble_samples]
    return np.repeat(one[None, :], n, axis=0).astype(np.complex64)


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

    def warm_up(self) -> None:
        """Classify synthetic preambles (no drift tracking, nothing recorded) in the batch sizes of
        :data:`WARM_UP_BATCHES`."""
        for n in WARM_UP_BATCHES:
            self.classifier.classify(_synthetic_preambles(self.classifier.lora, n), np.zeros(n), track=False)

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


class RegistryStage:
    """Decisions against a device registry: each packet is given an enrolled device id (verdict
    ``"accept"``) or called ``"rogue"`` (``device=-1``; ``"unknown"`` below the SNR floor ``min_snr_db``),
    with its K-NN score; every decision is appended to the registry's audit log, and the CFO drift of
    confidently accepted packets stored in their devices' CFO statistics, in one transaction per batch.
    The registry's devices, references and threshold are read once, when the stage is made; with ``track`` the
    devices' CFO centres and spreads are read again before each batch (the drift other processes stored).

    The batch takes the one decision path of ``lora-rffi authenticate``
    (:func:`~lorarffi.rffi.authenticate.decide_packets` with the authenticator of
    :func:`~lorarffi.rffi.authenticate.open_authenticator`): the packets' fingerprint windows in the model's
    view, their embeddings, the nearest enrolled device and its score, the threshold, the CFO gate.

    Parameters
    ----------
    embedder : Embedder
        The model the registry is bound to (:func:`~lorarffi.rffi.embedding.load_embedder`); another model's
        registry is refused in one line (:class:`~lorarffi.errors.ModelError`).
    registry : Registry
        Open registry.
    source : str
        The audit log's ``source`` of every decision (the stream's name).
    k : int
        Neighbours of the score.
    far : float, optional
        False-accept rate of the threshold (None: the stored one's).
    cfo_gate : bool
        Apply the CFO gate.
    iq_gate : bool
        Apply the IQ gate (the transmitter's IQ image and carrier leakage against its enrollment).
    track : bool
        Track each enrolled device's CFO drift and store it in the registry
        (:mod:`lorarffi.rffi.authenticate`, "Drift tracking").
    min_snr_db : float, optional
        A rejected packet with an SNR below this is ``"unknown"`` (not alerted), not ``"rogue"``; None: none.
    batch_size : int
        Packets per network call.
    score : {"cohort", "knn"}, optional
        What packets are decided on (:mod:`lorarffi.rffi.knn`; None: the default, ``"knn"``).
    """

    def __init__(
        self,
        embedder: Embedder,
        registry: Registry,
        *,
        source: str = "",
        k: int | None = None,
        far: float | None = None,
        cfo_gate: bool = True,
        track: bool = True,
        min_snr_db: float | None = None,
        batch_size: int = 64,
        score: str | None = None,
        iq_gate: bool = True,
    ) -> None:
        from lorarffi.rffi.authenticate import open_authenticator
        from lorarffi.rffi.knn import DEFAULT_K, DEFAULT_SCORE

        self.embedder = embedder
        self.registry = registry
        self.source = source
        self.batch_size = batch_size
        self.min_snr_db = min_snr_db
        self.authenticator = open_authenticator(
            embedder,
            registry,
            k=DEFAULT_K if k is None else k,
            far=far,
            cfo_gate=cfo_gate,
            drift_tracking=track,
            score=DEFAULT_SCORE if score is None else score,
            iq_gate=iq_gate,
        )
        self._owns_registry = False

    @classmethod
    def from_paths(
        cls,
        model_dir: str | os.PathLike,
        registry: str | os.PathLike,
        *,
        torch_device: Any = None,
        **options: Any,
    ) -> RegistryStage:
        """A stage built from a model directory and a registry path or database URL (what a worker process
        is given); the stage owns the registry it opens and :meth:`close` releases it.

        ``options`` are the constructor's (``source``, ``k``, ``far``, ``cfo_gate``, ``track``,
        ``min_snr_db``, ``batch_size``).
        """
        from lorarffi.rffi.embedding import load_embedder
        from lorarffi.rffi.registry import Registry

        embedder = load_embedder(model_dir, torch_device=torch_device)
        reg = Registry.open(registry, model_fingerprint=embedder.fingerprint or None)
        try:
            stage = cls(embedder, reg, **options)
        except BaseException:
            reg.close()
            raise
        stage._owns_registry = True
        return stage

    @property
    def lora(self) -> LoRaConfig:
        """The LoRa parameters the model was trained with (:class:`~lorarffi.dsp.config.LoRaConfig`)."""
        return self.embedder.lora

    def warm_up(self) -> None:
        """Embed synthetic preambles in the batch sizes of :data:`WARM_UP_BATCHES` (nothing is decided or
        logged)."""
        for n in WARM_UP_BATCHES:
            self.embedder.embed(_synthetic_preambles(self.embedder.lora, n), batch_size=self.batch_size)

    def decide(self, packets: Sequence[Any]) -> list[DecisionRecord]:
        if not packets:
            return []
        from lorarffi.rffi.authenticate import decide_packets

        dec = decide_packets(
            self.embedder,
            self.authenticator,
            self.registry,
            self.embedder.packet_preambles(packets),
            cfo_hz=np.array([p.cfo_hz for p in packets], np.float64),
            source=self.source,
            start_sample=np.array([p.start for p in packets], np.int64),
            snr_db=np.array([p.snr_db for p in packets], np.float64),
            batch_size=self.batch_size,
            min_snr_db=self.min_snr_db,
        )
        return [
            DecisionRecord.for_packet(p, device=d, verdict=v, score=s)
            for p, d, v, s in zip(
                packets, dec.device_id.tolist(), dec.verdict, dec.score.tolist(), strict=True
            )
        ]

    def set_receiver_offset_ppm(self, ppm: float) -> None:
        """Subtract a known receiver offset (ppm of the gate's carrier) from every CFO before the CFO gate
        (no-op without a gate); the gate goes on calibrating it from the packets."""
        from lorarffi.rffi.hybrid import ppm_to_hz

        gate = self.authenticator.gate
        if gate is not None:
            gate.receiver_offset_hz = float(ppm_to_hz(ppm, gate.carrier_hz))

    def close(self) -> None:
        """Release the registry when the stage opened it (:meth:`from_paths`)."""
        if self._owns_registry:
            self.registry.close()
