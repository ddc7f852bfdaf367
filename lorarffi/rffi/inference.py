"""Classify preambles with a trained model directory: CNN, then the CFO-gated hybrid decision.

>>> clf = load_classifier("runs/model")                      # doctest: +SKIP
>>> dec = clf.classify_packets(packets)                      # detected packets   # doctest: +SKIP
>>> pre = clf.preprocess(stored_iq)                          # stored preambles   # doctest: +SKIP
>>> dec = clf.classify(pre.iq, pre.cfo_hz)                   # doctest: +SKIP
>>> dec.device_id, dec.verdict                               # doctest: +SKIP

A model takes aligned, unit-RMS preambles with their CFO removed, or left in when it was trained without
compensation (``ModelDirConfig.cfo_compensation``). That choice is made here, once: :meth:`Classifier.
packet_preambles` takes the matching view of detected packets (the detector makes both), and
:meth:`Classifier.preprocess` prepares stored preambles accordingly; the network's input is computed from
them as they are (nothing is normalised or compensated again). The batch goes through the representation
and the network at once (no loop over packets), on the model's device.

Drift tracking: when the model's gate has tracking on (``GateParams.tracking``, default), every call of
:meth:`Classifier.classify` feeds its confidently accepted packets to the gate (``track=False`` skips that);
:meth:`Classifier.update_drift` feeds a decision explicitly; :meth:`Classifier.save_state` persists the
tracked statistics in the model directory (``hybrid_state.json``), where the next :func:`load_classifier`
finds them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.packet import Packet
from lorarffi.errors import ConfigError
from lorarffi.rffi.checkpoint import ModelDirConfig, load_model, save_hybrid_state
from lorarffi.rffi.features import compute_features
from lorarffi.rffi.hybrid import CfoGate, GateResult, ppm_to_hz
from lorarffi.rffi.preprocess import Preprocessed, preprocess_preambles

__all__ = ["Decision", "Classifier", "load_classifier"]


@dataclass(frozen=True)
class Decision:
    """Decisions for a batch of N packets.

    Attributes
    ----------
    device_id : ndarray of int64, shape (N,)
        Hybrid decision (device id), -1 when the packet is rejected as unknown.
    verdict : list of str
        ``"accept"`` or ``"unknown"`` (every device ruled out by the CFO gate).
    cnn_device_id : ndarray of int64, shape (N,)
        The CNN's decision alone.
    confidence : ndarray of float32, shape (N,)
        Renormalised probability of the hybrid decision (0 when rejected).
    cnn_confidence : ndarray of float32, shape (N,)
        Softmax probability of the CNN's decision.
    cfo_hz : ndarray of float64, shape (N,)
        The packets' CFO estimates, Hz.
    class_index : ndarray of int64, shape (N,)
        Hybrid decision as class index (-1 when rejected).
    """

    device_id: npt.NDArray[np.int64]
    verdict: list[str]
    cnn_device_id: npt.NDArray[np.int64]
    confidence: npt.NDArray[np.float32]
    cnn_confidence: npt.NDArray[np.float32]
    cfo_hz: npt.NDArray[np.float64]
    class_index: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.device_id.size)

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per packet: ``device``, ``verdict``, ``cnn_device``, ``confidence``, ``cfo_hz``."""
        return [
            {"device": int(d), "verdict": v, "cnn_device": int(c), "confidence": float(p), "cfo_hz": float(f)}
            for d, v, c, p, f in zip(  # noqa: B905 (equal lengths by construction)
                self.device_id, self.verdict, self.cnn_device_id, self.confidence, self.cfo_hz
            )
        ]



def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Row-wise softmax of logits (N, K), shifted by each row's maximum."""
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)

class Classifier:
    """A loaded model directory ready to classify packets (see :func:`load_classifier`).

    Attributes
    ----------
    lora : LoRaConfig
        LoRa parameters the model was trained for (``config.lora``).
    config : ModelDirConfig
        The model directory's whole configuration.
    device_ids : list of int
        Device id of each class.
    gate : CfoGate or None
        The CFO gate (None for a model saved without CFO statistics: the hybrid then equals the CNN).
    hybrid : bool
        Apply the gate (True by default when there is one).
    """

    def __init__(self, model, config: ModelDirConfig, model_dir: pathlib.Path | None = None) -> None:
        import torch

        from lorarffi.rffi.fuse import fuse_conv_bn

        # eval-mode copy with BatchNorm folded into the convolutions, in channels-last layout (oneDNN's fast
        # path for convolutions and pooling on CPU; harmless on CUDA)
        self.model = fuse_conv_bn(model).to(memory_format=torch.channels_last)
        self.config = config
        self.model_dir = model_dir
        self.lora: LoRaConfig = config.lora
        self.device_ids: list[int] = list(config.device_ids)
        self._ids = np.asarray(self.device_ids, dtype=np.int64)
        self.gate: CfoGate | None = CfoGate.from_dict(config.hybrid) if config.hybrid else None
        self.hybrid = self.gate is not None
        self.torch_device = next(model.parameters()).device
        self._torch = torch

    # -- the model's view of packets -------------------------------------------------------------
    def packet_preambles(self, packets: Sequence[Packet]) -> npt.NDArray[np.complex64]:
        """The fingerprint windows of detected packets as this model takes them: (N, L) complex64.

        ``Packet.preamble`` (CFO compensated) for a model trained with CFO compensation,
        ``Packet.preamble_with_cfo`` for one trained without; both are aligned and unit RMS. The packets must
        be at the model's sample rate (``Packet.preamble_fs_hz == lora.fs_hz``).
        """
        if not packets:
            return np.zeros((0, self.lora.preamble_samples), np.complex64)
        fs_hz = float(packets[0].preamble_fs_hz)
        if not math.isclose(fs_hz, float(self.lora.fs_hz), rel_tol=1e-9):
            raise ConfigError(
                f"the detector delivers preambles at {fs_hz:g} Hz but the model was trained at "
                f"{self.lora.fs_hz:g} Hz: use a sample rate matching the model"
            )
        if self.config.cfo_compensation:
            return np.stack([np.asarray(p.preamble, np.complex64) for p in packets])
        if any(p.preamble_with_cfo is None for p in packets):
            raise ConfigError(
                "this model was trained without CFO compensation: it needs packets that keep "
                "their window as received (Packet.preamble_with_cfo)"
            )
        return np.stack([np.asarray(p.preamble_with_cfo, np.complex64) for p in packets])

    def preprocess(self, iq: npt.ArrayLike, *, source: object = "preambles",
                   packet_symbols: bool = False) -> Preprocessed:
        """Stored preambles (aligned, as received) as this model takes them.

        :func:`~lorarffi.rffi.preprocess.preprocess_preambles` with the model's LoRa parameters: CFO
        estimated, removed only for a model trained with CFO compensation, unit RMS; ``packet_symbols``: rows
        longer than the preamble are whole packets whose up-chirps all go into the preamble's (see there).
        """
        return preprocess_preambles(iq, self.lora, compensate=self.config.cfo_compensation, source=source,
                                    packet_symbols=packet_symbols)

    # -- the network -------------------------------------------------------------------------------
    def features(self, preambles: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Model input (float32, (N, C, F, T) or (N, 2, L)) of preambles (N, L) in the model's view
        (:meth:`packet_preambles`, :meth:`preprocess`)."""
        x = np.asarray(preambles)
        if x.ndim == 1:
            x = x[None, :]
        n_samples = self.lora.preamble_samples
        if x.ndim != 2 or x.shape[1] < n_samples:
            raise ConfigError(
                f"preambles have shape {np.shape(preambles)}, expected (N, L) with L >= {n_samples} "
                f"(the model's {self.lora.preamble_symbols} symbols at SF{self.lora.sf})"
            )
        return compute_features(x[:, :n_samples], self.config.representation)

    def logits(
        self,
        preambles: npt.ArrayLike,
        *,
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> npt.NDArray[np.float32]:
        """CNN logits, float32 numpy (N, K), of preambles (N, L) in the model's view.

        The network runs on sub-batches of ``batch_size`` packets: 64 keeps a small CNN's feature maps in
        cache (on 2 CPU cores, 3x the throughput of one 256-packet batch). ``progress`` is called with each
        sub-batch's size once it is through (a progress bar's advance).
        """
        return self._run_network(
            self.model, preambles, len(self.device_ids), batch_size=batch_size, progress=progress
        )

    def _run_network(
        self,
        fn: Any,
        preambles: npt.ArrayLike,
        width: int,
        *,
        batch_size: int,
        progress: Callable[[int], None] | None = None,
    ) -> npt.NDArray[np.float32]:
        """``fn`` (a torch function of a channels-last input batch, giving (B, width)) of preambles (N, L) in
        the model's view, ``batch_size`` packets at a time: float32 numpy (N, width); ``progress(B)`` after
        each sub-batch."""
        from lorarffi.rffi.models import channels_last_batch

        torch = self._torch
        feats = self.features(preambles)
        out = []
        with torch.inference_mode():
            for s in range(0, feats.shape[0], batch_size):
                x = channels_last_batch(torch.from_numpy(feats[s : s + batch_size]).to(self.torch_device))
                out.append(fn(x).float().cpu().numpy())
                if progress is not None:
                    progress(out[-1].shape[0])
        return np.concatenate(out) if out else np.zeros((0, width), np.float32)

    # -- decisions ---------------------------------------------------------------------------------
    def decide(self, logits: npt.ArrayLike, cfo_hz: npt.ArrayLike, *, track: bool = True) -> Decision:
        """Hybrid decision from CNN logits (N, K) and CFO estimates (N,); optionally feeds drift tracking.

        A row whose CFO is NaN (not a preamble, :func:`~lorarffi.rffi.preprocess.preprocess_preambles`) has
        nothing to gate on: the CNN decides it, and drift tracking does not learn from it."""
        z = np.asarray(logits, dtype=np.float64)
        cfo = np.asarray(cfo_hz, dtype=np.float64).reshape(-1)
        if cfo.size != z.shape[0]:
            raise ConfigError(f"cfo_hz has {cfo.size} entries but there are {z.shape[0]} preambles")
        p = _softmax(z)
        cnn_idx = p.argmax(axis=1)
        cnn_conf = p.max(axis=1).astype(np.float32)
        cnn = GateResult(
            cnn_idx.astype(np.int64), cnn_conf, np.ones_like(p, dtype=bool), p.astype(np.float32)
        )
        if self.hybrid and self.gate is not None:
            no_cfo = ~np.isfinite(cfo)  # rows that are not preambles (rffi.preprocess): the CNN decides them
            res = self.gate.apply(z, np.where(no_cfo, 0.0, cfo))
            if no_cfo.any():
                res = GateResult(
                    np.where(no_cfo, cnn.index, res.index),
                    np.where(no_cfo, cnn.confidence, res.confidence),
                    np.where(no_cfo[:, None], cnn.allowed, res.allowed),
                    np.where(no_cfo[:, None], cnn.probs, res.probs),
                )
            if track:
                self.gate.update(cfo, res.index, res.confidence, cnn_index=cnn_idx, cnn_confidence=cnn_conf)
        else:
            res = cnn
        device = np.where(res.index >= 0, self._ids[np.maximum(res.index, 0)], -1).astype(np.int64)
        verdict = ["accept" if i >= 0 else "unknown" for i in res.index.tolist()]
        return Decision(device, verdict, self._ids[cnn_idx], res.confidence, cnn_conf, cfo, res.index)

    def classify(self, preambles: npt.ArrayLike, cfo_hz: npt.ArrayLike, *, track: bool = True) -> Decision:
        """Classify preambles in the model's view.

        Parameters
        ----------
        preambles : array_like of complex64, shape (N, L)
            Aligned, unit-RMS preambles, CFO compensated if and only if the model was trained so
            (``config.cfo_compensation``): :meth:`packet_preambles` of detected packets, or
            ``preprocess(iq).iq`` of stored ones; ``L >= lora.preamble_samples``.
        cfo_hz : array_like of float, shape (N,)
            CFO estimate of each row (``Packet.cfo_hz``, ``preprocess(iq).cfo_hz``), Hz: the gate's input.
        track : bool
            Feed confidently accepted packets to drift tracking (when the gate's tracking is on).

        Returns
        -------
        Decision
        """
        return self.decide(self.logits(preambles), cfo_hz, track=track)

    def classify_packets(self, packets: Sequence[Packet], *, track: bool = True) -> Decision:
        """Classify detected packets: :meth:`classify` of their :meth:`packet_preambles` and CFO estimates."""
        cfo_hz = np.array([p.cfo_hz for p in packets], np.float64)
        return self.classify(self.packet_preambles(packets), cfo_hz, track=track)

    # -- drift tracking ----------------------------------------------------------------------------
    def calibrate_receiver(self, logits: npt.ArrayLike, cfo_hz: npt.ArrayLike) -> float:
        """Estimate the receiver offset from a whole recording's CNN logits (N, K) and CFOs (N,) before
        deciding it (:meth:`~lorarffi.rffi.hybrid.CfoGate.calibrate_receiver`); returns it in Hz (0 without a
        gate, else the gate's unchanged offset with tracking or receiver tracking off)."""
        if self.gate is None:
            return 0.0
        if not (self.gate.params.tracking and self.gate.params.receiver_tracking):
            return self.gate.receiver_offset_hz
        p = _softmax(np.asarray(logits, dtype=np.float64))
        return self.gate.calibrate_receiver(cfo_hz, p.argmax(axis=1), p.max(axis=1))

    def update_drift(self, decision: Decision) -> npt.NDArray[np.int64]:
        """Feed a decision (made with ``track=False``) to drift tracking; returns packets used per class."""
        if self.gate is None:
            return np.zeros(len(self.device_ids), np.int64)
        order = np.argsort(self._ids)
        cnn_index = order[np.searchsorted(self._ids, decision.cnn_device_id, sorter=order)]
        return self.gate.update(
            decision.cfo_hz,
            decision.class_index,
            decision.confidence,
            cnn_index=cnn_index,
            cnn_confidence=decision.cnn_confidence,
        )

    def set_tracking(self, on: bool) -> None:
        """Switch drift tracking on or off (persisted by :meth:`save_state`)."""
        if self.gate is not None:
            self.gate.set_tracking(on)

    def set_receiver_offset_ppm(self, ppm: float) -> None:
        """Tell the CFO gate how much higher every CFO reads through this receiver than through the training
        one, ppm of the carrier (receiver tracking, when on, starts from it; persisted by
        :meth:`save_state`)."""
        if self.gate is not None:
            self.gate.params = dataclasses.replace(self.gate.params, receiver_offset_ppm=float(ppm))
            self.gate.receiver_offset_hz = float(ppm_to_hz(ppm, self.gate.carrier_hz))

    def save_state(self, model_dir: str | os.PathLike | None = None) -> None:
        """Persist the gate's (tracked) state into the model directory."""
        target = model_dir or self.model_dir
        if self.gate is None or target is None:
            return
        save_hybrid_state(target, self.gate.to_dict())


def load_classifier(model_dir: str | os.PathLike, torch_device=None) -> Classifier:
    """Load a model directory for inference.

    Parameters
    ----------
    model_dir : path-like
        Written by ``lora-rffi train``.
    torch_device : torch.device or str, optional
        Where the network runs. None: CUDA when available, else CPU.
    """
    model, config = load_model(model_dir, torch_device=torch_device)
    return Classifier(model, config, pathlib.Path(model_dir))
