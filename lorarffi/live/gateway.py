"""Gateway front end: a wideband stream -> channelizer -> one packet detector per (channel, spreading factor).

:class:`GatewayDetector` has the detector interface the live pipeline drives (``process(chunk)``, ``flush()``,
``n_nonfinite``) but returns :class:`TaggedPacket`: each packet with its indices moved back to the wideband
stream (:func:`~lorarffi.dsp.channelize.packet_to_input`), the channel and spreading factor it was found on,
and whether its fingerprint window is shared with another packet of the same channel and spreading factor
(:func:`~lorarffi.dsp.collision.collision_flags`). :class:`GatewayPlan` is the listening plan.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.channelize import Channelizer, packet_to_input
from lorarffi.dsp.collision import collision_flags
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.detect import StreamDetector
from lorarffi.dsp.packet import Packet
from lorarffi.errors import ConfigError

__all__ = ["GatewayPlan", "TaggedPacket", "GatewayDetector", "parse_sfs"]


def parse_sfs(text: str) -> tuple[int, ...]:
    """Spreading factors from ``"7-12"``, ``"7,9"`` or ``"7-9,12"``, sorted, each 6 to 12.

    Examples
    --------
    >>> parse_sfs("7-12"), parse_sfs("9,7"), parse_sfs("7-8,11")
    ((7, 8, 9, 10, 11, 12), (7, 9), (7, 8, 11))
    """
    out: set[int] = set()
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise ConfigError(f"--sf {text!r} is not valid: use a range or list such as 7-12 or 7,9") from None
    if not out or min(out) < 6 or max(out) > 12:
        raise ConfigError(f"--sf {text!r} is not valid: spreading factors run from 6 to 12")
    return tuple(sorted(out))


@dataclass(frozen=True)
class GatewayPlan:
    """What a gateway listens to: channels of one wideband capture, each at every listed spreading factor.

    Attributes
    ----------
    center_freq_hz : float
        Frequency of the capture's 0 Hz, Hz.
    channels_hz : tuple of float
        Channel centre frequencies, Hz.
    sfs : tuple of int
        Spreading factors searched on every channel.
    decimation : int, optional
        Input samples per channel sample (default: the channelizer's choice, 2 samples per chip or more).
    """

    center_freq_hz: float
    channels_hz: tuple[float, ...]
    sfs: tuple[int, ...]
    decimation: int | None = None

    def __post_init__(self) -> None:
        if not self.channels_hz:
            raise ConfigError("GatewayPlan: give at least one channel")
        if not self.sfs:
            raise ConfigError("GatewayPlan: give at least one spreading factor")


def _block_samples(cfg: LoRaConfig, block_s: float) -> int:
    return max(1, int(round(block_s * cfg.integer_oversampling().fs_hz)))


class TaggedPacket(NamedTuple):
    """A packet found by the gateway front end, its indices in the wideband stream."""

    packet: Packet
    channel_hz: float
    sf: int
    collided: bool


class GatewayDetector:
    """Channelizer -> one :class:`~lorarffi.dsp.detect.StreamDetector` per (channel, SF).

    Parameters
    ----------
    cfg : LoRaConfig
        The capture: ``fs_hz`` is the wideband input rate; ``bw_hz``, ``preamble_symbols`` and the sync word
        apply to every channel (``sf`` is replaced by each of ``plan.sfs``).
    plan : GatewayPlan
    block_s : float
        Signal duration of each detector's processing block, in s (at least one symbol); the channelizer's
        blocks are about half as long.

    Attributes
    ----------
    n_nonfinite : int
        Input samples that were NaN or infinite (counted and replaced by zeros before the channelizer, which
        would otherwise spread them over a whole block of every channel).
    time_s : dict of str to float
        CPU time of the calling thread spent in the channelizer (``"channelize"``), in each spreading
        factor's detectors (``"detect_sf7"``...) and in the collision check (``"collision"``), in s.
    """

    def __init__(self, cfg: LoRaConfig, plan: GatewayPlan, *, block_s: float = 0.016) -> None:
        self.cfg = cfg
        self.plan = plan
        self.channelizer = Channelizer(
            cfg.fs_hz, plan.center_freq_hz, plan.channels_hz, bw_hz=cfg.bw_hz, decimation=plan.decimation,
            block_samples=max(1, int(block_s * cfg.fs_hz / 2)),
        )
        fs_out = self.channelizer.fs_out_hz
        self._cfgs = {sf: cfg.replace(sf=sf, fs_hz=fs_out) for sf in plan.sfs}
        self._detectors = [
            [(sf, StreamDetector(c, block_samples=_block_samples(c, block_s)))
             for sf, c in self._cfgs.items()]
            for _ in plan.channels_hz
        ]
        self.n_nonfinite = 0
        self.time_s: dict[str, float] = defaultdict(float)

    @property
    def decimation(self) -> int:
        return self.channelizer.decimation

    def process(self, chunk: npt.ArrayLike) -> list[TaggedPacket]:
        """Feed the next wideband samples; returns the packets completed on any channel and SF."""
        x = np.asarray(chunk)
        x = x.astype(np.complex64, copy=False)
        if x.size and not np.isfinite(x.sum()):
            bad = ~np.isfinite(x)
            if bad.any():
                self.n_nonfinite += int(np.count_nonzero(bad))
                x = np.where(bad, np.complex64(0), x)
        t0 = time.thread_time()
        y = self.channelizer.process(x)
        self.time_s["channelize"] += time.thread_time() - t0
        return self._detect(y, flush=False)

    def flush(self) -> list[TaggedPacket]:
        """End of stream: the channelizer's last samples, then every detector's packets in progress."""
        t0 = time.thread_time()
        y = self.channelizer.flush()
        self.time_s["channelize"] += time.thread_time() - t0
        return self._detect(y, flush=True)

    def _detect(self, y: npt.NDArray[np.complex64], *, flush: bool) -> list[TaggedPacket]:
        out: list[TaggedPacket] = []
        for c, channel_hz in enumerate(self.plan.channels_hz):
            for sf, det in self._detectors[c]:
                t0 = time.thread_time()
                found = det.process(y[c]) if y.shape[1] else []
                if flush:
                    found = found + det.flush()
                self.time_s[f"detect_sf{sf}"] += time.thread_time() - t0
                if found:
                    out += self._tag(found, channel_hz, sf)
        out.sort(key=lambda t: t.packet.start)
        return out

    def _tag(self, found: Sequence[Packet], channel_hz: float, sf: int) -> list[TaggedPacket]:
        t0 = time.thread_time()
        fp_cfg = LoRaConfig(
            sf=sf,
            bw_hz=self.cfg.bw_hz,
            fs_hz=found[0].preamble_fs_hz,
            preamble_symbols=self.cfg.preamble_symbols,
        )
        collided = collision_flags(np.stack([p.preamble for p in found]), fp_cfg)
        self.time_s["collision"] += time.thread_time() - t0
        d, fs = self.decimation, self.cfg.fs_hz
        return [
            TaggedPacket(packet_to_input(p, d, fs), channel_hz, sf, bool(k))
            for p, k in zip(found, collided.tolist(), strict=True)
        ]
