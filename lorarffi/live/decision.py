"""The decision record: one per detected packet, made by a decision stage and read by every sink.

A :class:`DecisionRecord` carries what the detector measured (stream position, CFO, SNR, power, sync word),
what the decision stage concluded (device, verdict and, when the stage has them, the CNN's own pick, a
confidence, a score, the channel and spreading factor) and the decision latency. Its JSON form
(:meth:`DecisionRecord.to_dict`, :meth:`DecisionRecord.to_json`) is what the JSONL, ZeroMQ and MQTT sinks
emit: the packet fields, ``device``, ``verdict`` and ``latency_ms`` always, each optional field only when the
stage set it. :attr:`DecisionRecord.device_label` is the one place a decision is named for counting and
display, and :attr:`DecisionRecord.is_alert` the one place a decision is judged worth an alert.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["DecisionRecord", "NO_MODEL_LABEL", "UNKNOWN_LABEL", "ROGUE", "ALERT_VERDICTS"]

NO_MODEL_LABEL = "-"
"""Device label of a decision made without a model (detection only)."""
UNKNOWN_LABEL = "unknown"
"""Device label of a packet the stage rejected (``device < 0``) without calling it a rogue."""
ROGUE = "rogue"
"""Verdict, and device label, of a packet a registry stage found to be no enrolled device."""
ALERT_VERDICTS = frozenset({ROGUE})
"""Verdicts published as alerts. ``"unknown"`` is not one: it says the evidence was not enough to name a
device (a weak or drifted packet as often as a stranger), and alerting on it would bury the rogues; it stays
in the decision stream for whoever wants it."""


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """The decision about one detected packet.

    Attributes
    ----------
    start, stop, fingerprint_start : int
        Absolute stream indices of the packet's first preamble sample, of the sample just past its
        start-of-frame delimiter, and of its fingerprint window's first sample (see
        :class:`~lorarffi.dsp.packet.Packet`).
    time_s : float
        ``start`` in seconds of stream (``start / fs_hz``).
    cfo_hz, snr_db, power_db : float
        The detector's CFO estimate (Hz), in-band SNR (dB) and fingerprint-window power (dB).
    sync_word : int
        The sync word read after the preamble (-1 when the detector gives none).
    device : int or None
        The device decided on; -1 when the stage rejected the packet; None without a model.
    verdict : str
        ``"detected"`` (no model), ``"accept"`` or ``"unknown"`` (closed-set classifier), ``"accept"``,
        ``"rogue"`` or ``"unknown"`` (registry stage; ``"unknown"``: rejected below its SNR floor).
    latency_ms : float
        From the arrival of the packet's last preamble sample to its decision, in ms (NaN until the pipeline
        has timed it).
    cnn_device : int, optional
        The network's own decision before the CFO gate.
    confidence : float, optional
        Probability of the decision, 0 to 1 (0 when rejected).
    score : float, optional
        A stage's score of the decision: the registry stage's K-NN score (mean embedding distance to the
        nearest enrolled device's references; accepted at most the registry's threshold).
    channel_hz : float, optional
        Centre frequency of the channel the packet was received on, in Hz.
    sf : int, optional
        Spreading factor the packet was received with.

    Optional fields left at None are absent from :meth:`to_dict` and the JSON.
    """

    start: int
    stop: int
    fingerprint_start: int
    time_s: float
    cfo_hz: float
    snr_db: float
    power_db: float
    sync_word: int
    device: int | None
    verdict: str
    latency_ms: float = math.nan
    cnn_device: int | None = None
    confidence: float | None = None
    score: float | None = None
    channel_hz: float | None = None
    sf: int | None = None

    @classmethod
    def for_packet(cls, packet: Any, *, device: int | None, verdict: str, **optional: Any) -> DecisionRecord:
        """The record of a detector packet (:class:`~lorarffi.dsp.packet.Packet`) and a stage's decision.

        ``time_s`` is ``packet.start / packet.fs_hz`` (the rate its indices refer to); ``optional`` sets
        ``cnn_device``, ``confidence``, ``score``, ``channel_hz``, ``sf``.
        """
        wrong = set(optional) - set(_OPTIONAL)
        if wrong:
            raise TypeError(f"DecisionRecord has no optional field {sorted(wrong)}: use {sorted(_OPTIONAL)}")
        start = int(packet.start)
        return cls(
            start=start,
            stop=int(packet.stop),
            fingerprint_start=int(packet.fingerprint_start),
            time_s=start / packet.fs_hz,
            cfo_hz=float(packet.cfo_hz),
            snr_db=float(packet.snr_db),
            power_db=float(getattr(packet, "power_db", math.nan)),
            sync_word=int(getattr(packet, "sync_word", -1)),
            device=None if device is None else int(device),
            verdict=str(verdict),
            **{name: None if value is None else _OPTIONAL[name](value) for name, value in optional.items()},
        )

    def timed(self, latency_ms: float) -> DecisionRecord:
        """The same record with its latency set, in ms."""
        return replace(self, latency_ms=latency_ms)

    @property
    def known_device(self) -> int | None:
        """The device id when the stage named one; None without a model or when the packet was rejected."""
        return None if self.device is None or self.device < 0 else self.device

    @property
    def is_alert(self) -> bool:
        """True when the decision is published as an alert (its verdict is in :data:`ALERT_VERDICTS`)."""
        return self.verdict in ALERT_VERDICTS

    @property
    def device_label(self) -> str:
        """How the decision is counted and shown: the device id, ``"rogue"`` (rejected as a rogue),
        ``"unknown"`` (rejected otherwise) or ``"-"`` (no model)."""
        if self.device is None:
            return NO_MODEL_LABEL
        if self.device >= 0:
            return str(self.device)
        return ROGUE if self.verdict == ROGUE else UNKNOWN_LABEL

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields in order: packet fields, ``device``, ``verdict``, ``latency_ms``, then the optional
        fields that are set."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in _OPTIONAL:
                continue
            out[f.name] = value
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as one compact JSON line; non-finite floats become ``null``."""
        items = self.to_dict().items()
        return json.dumps(
            {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in items},
            separators=(",", ":"),
            allow_nan=False,
        )


# the optional fields and their JSON types
_OPTIONAL: dict[str, type] = {
    "cnn_device": int,
    "confidence": float,
    "score": float,
    "channel_hz": float,
    "sf": int,
}
