"""LoRa chirp synthesis: base chirps, modulated symbols and whole phase-continuous packets.

A LoRa symbol with value ``s`` (0 to ``2**sf - 1``) is an up-chirp whose instantaneous frequency starts at
``-bw/2 + s*bw/2**sf``, rises at ``bw/T`` Hz/s and wraps from ``+bw/2`` to ``-bw/2`` (Shen et al. 2021,
eq. 4; Semtech AN1200.22). A packet is ``n_preamble`` unmodulated up-chirps, two sync-word up-chirps,
2.25 down-chirps (the start-of-frame delimiter, SFD) and the payload symbols. Phase is continuous across
symbols, as a real transmitter's VCO/PLL output is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError

__all__ = [
    "upchirp",
    "downchirp",
    "modulate",
    "sync_word_symbols",
    "sync_word_from_symbols",
    "PacketLayout",
    "packet_layout",
    "packet_waveform",
]

_UP, _DOWN = 1, -1


def sync_word_symbols(sync_word: int) -> tuple[int, int]:
    """The two symbol values that carry a sync word: ``(hi_nibble * 8, lo_nibble * 8)``.

    0x12 (private) gives (8, 16) and 0x34 (LoRaWAN) gives (24, 32), as SX127x/SX126x chips and gr-lora_sdr
    send.
    """
    if not 0 <= int(sync_word) <= 0xFF:
        raise ConfigError(f"sync_word={sync_word!r} is not valid: use 0x00 to 0xFF")
    return ((sync_word >> 4) & 0xF) * 8, (sync_word & 0xF) * 8


def sync_word_from_symbols(s1: int, s2: int) -> int:
    """Inverse of :func:`sync_word_symbols` (symbol values rounded to the nearest multiple of 8)."""
    return ((int(round(s1 / 8)) & 0xF) << 4) | (int(round(s2 / 8)) & 0xF)


@dataclass(frozen=True, slots=True)
class PacketLayout:
    """Where the parts of a packet lie, in samples from the first preamble sample.

    Positions are floats at non-integer rates.

    ``fingerprint_start`` is the first sample of the fingerprint window: the ``cfg.preamble_symbols``
    up-chirps just before the sync word.
    """

    n_preamble: int
    fingerprint_start: float
    sync_start: float
    sfd_start: float
    payload_start: float
    stop: float


def packet_layout(
    cfg: LoRaConfig, n_payload_symbols: int = 0, *, n_preamble: int | None = None
) -> PacketLayout:
    """Sample positions of sync word, SFD, payload and end of a packet at ``cfg.fs_hz``.

    Parameters
    ----------
    cfg : LoRaConfig
    n_payload_symbols : int
        Number of payload symbols after the SFD.
    n_preamble : int, optional
        Preamble up-chirps sent; defaults to ``cfg.preamble_symbols``.
    """
    n_pre = cfg.preamble_symbols if n_preamble is None else int(n_preamble)
    sps = cfg.n_chips * cfg.oversampling
    return PacketLayout(
        n_preamble=n_pre,
        fingerprint_start=(n_pre - cfg.preamble_symbols) * sps,
        sync_start=n_pre * sps,
        sfd_start=(n_pre + 2) * sps,
        payload_start=(n_pre + 4.25) * sps,
        stop=(n_pre + 4.25 + n_payload_symbols) * sps,
    )


def _segment_phase(
    tau_s: npt.NDArray[np.float64],
    f0_hz: npt.NDArray[np.float64] | float,
    direction: npt.NDArray[np.int8] | int,
    slope_hz_per_s: float,
    bw_hz: float,
) -> npt.NDArray[np.float64]:
    """Phase in radians at ``tau_s`` into a chirp segment starting at ``f0_hz`` (up-chirps wrap at +bw/2)."""
    k = direction * slope_hz_per_s
    phase = 2 * np.pi * (f0_hz * tau_s + 0.5 * k * tau_s**2)
    # An up-chirp that starts above -bw/2 reaches +bw/2 after tau_wrap and continues from -bw/2.
    tau_wrap = np.where(np.asarray(direction) > 0, (bw_hz / 2 - np.asarray(f0_hz)) / slope_hz_per_s, np.inf)
    past = np.maximum(tau_s - tau_wrap, 0.0)
    return phase - 2 * np.pi * bw_hz * past


def _synthesize(
    cfg: LoRaConfig,
    values: npt.NDArray[np.int64],
    directions: npt.NDArray[np.int8],
    durations_chips: npt.NDArray[np.float64],
    n_samples: int,
    t0_s: float,
) -> npt.NDArray[np.complex128]:
    """Phase-continuous chirp segments sampled at ``t0_s + n / fs_hz``; zero outside the packet."""
    bw, n_chips = cfg.bw_hz, cfg.n_chips
    slope = bw * bw / n_chips  # Hz/s: sweeps bw in one symbol of n_chips/bw seconds
    chip_s = 1.0 / bw
    seg_dur_s = durations_chips * chip_s
    seg_start_s = np.concatenate(([0.0], np.cumsum(seg_dur_s)))
    f0 = np.where(directions > 0, -bw / 2 + values * bw / n_chips, bw / 2)
    end_phase = _segment_phase(seg_dur_s, f0, directions, slope, bw)
    start_phase = np.concatenate(([0.0], np.cumsum(end_phase)[:-1]))

    t = t0_s + np.arange(n_samples) / cfg.fs_hz
    seg = np.searchsorted(seg_start_s, t, side="right") - 1
    inside = (seg >= 0) & (seg < values.size)
    seg_c = np.clip(seg, 0, max(values.size - 1, 0))
    tau = t - seg_start_s[seg_c]
    phase = start_phase[seg_c] + _segment_phase(tau, f0[seg_c], directions[seg_c], slope, bw)
    out = np.exp(1j * phase)
    out[~inside] = 0.0
    return out


def _symbol_plan(
    cfg: LoRaConfig, payload: npt.NDArray[np.int64], n_preamble: int, sync_word: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int8], npt.NDArray[np.float64]]:
    s1, s2 = sync_word_symbols(sync_word)
    n = cfg.n_chips
    values = np.concatenate([np.zeros(n_preamble, np.int64), [s1, s2], [0, 0, 0], payload]).astype(np.int64)
    directions = np.concatenate(
        [np.full(n_preamble + 2, _UP), np.full(3, _DOWN), np.full(payload.size, _UP)]
    ).astype(np.int8)
    durations = np.concatenate([np.full(n_preamble + 2, n), [n, n, n / 4], np.full(payload.size, n)]).astype(
        np.float64
    )
    return values, directions, durations


def _check_symbols(symbols: npt.ArrayLike, cfg: LoRaConfig) -> npt.NDArray[np.int64]:
    arr = np.asarray(symbols, dtype=np.int64).ravel()
    if arr.size and (arr.min() < 0 or arr.max() >= cfg.n_chips):
        raise ConfigError(f"symbol values must lie in 0..{cfg.n_chips - 1} for sf={cfg.sf}")
    return arr


def upchirp(cfg: LoRaConfig, symbol: int = 0) -> npt.NDArray[np.complex64]:
    """One up-chirp carrying ``symbol``: complex64, shape ``(cfg.samples_per_symbol,)``, unit amplitude.

    Examples
    --------
    >>> c = upchirp(LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6))
    >>> c.shape, c.dtype
    ((1024,), dtype('complex64'))
    """
    values = _check_symbols([symbol], cfg)
    out = _synthesize(
        cfg, values, np.array([_UP], np.int8), np.array([cfg.n_chips], float), cfg.samples_per_symbol, 0.0
    )
    return out.astype(np.complex64)


def downchirp(cfg: LoRaConfig) -> npt.NDArray[np.complex64]:
    """One down-chirp (conjugate of the base up-chirp): complex64, shape ``(samples_per_symbol,)``."""
    return np.conj(upchirp(cfg, 0))


def modulate(symbols: npt.ArrayLike, cfg: LoRaConfig) -> npt.NDArray[np.complex64]:
    """Phase-continuous up-chirps carrying ``symbols``: complex64, ``len(symbols)`` symbols long."""
    values = _check_symbols(symbols, cfg)
    n_samples = int(round(values.size * cfg.n_chips * cfg.oversampling))
    out = _synthesize(
        cfg,
        values,
        np.full(values.size, _UP, np.int8),
        np.full(values.size, float(cfg.n_chips)),
        n_samples,
        0.0,
    )
    return out.astype(np.complex64)


def packet_waveform(
    cfg: LoRaConfig,
    payload_symbols: npt.ArrayLike = (),
    *,
    n_preamble: int | None = None,
    sync_word: int | None = None,
    cfo_hz: float = 0.0,
    phase_rad: float = 0.0,
    t0_s: float = 0.0,
    n_samples: int | None = None,
) -> npt.NDArray[np.complex64]:
    """A whole phase-continuous LoRa packet at baseband, unit amplitude.

    Parameters
    ----------
    cfg : LoRaConfig
        Sample rate, SF and bandwidth; ``cfg.preamble_symbols`` and ``cfg.sync_word`` are the defaults.
    payload_symbols : array_like of int
        Payload symbol values, each in ``0 .. 2**sf - 1``.
    n_preamble : int, optional
        Number of preamble up-chirps (6 to 65535 in practice).
    sync_word : int, optional
        Sync word; its two symbols follow the preamble.
    cfo_hz : float
        Carrier frequency offset applied to the whole packet, in Hz.
    phase_rad : float
        Carrier phase at the first preamble sample, in radians.
    t0_s : float
        Time of sample 0 relative to the packet start, in seconds: ``-d`` delays the packet by ``d`` seconds
        (fractional-sample delays included); samples before the packet are zero.
    n_samples : int, optional
        Output length; default: up to the end of the packet.

    Returns
    -------
    iq : ndarray of complex64, shape (n_samples,)

    Examples
    --------
    >>> cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    >>> packet_waveform(cfg, [1, 2, 3]).size == packet_layout(cfg, 3).stop
    True
    """
    n_pre = cfg.preamble_symbols if n_preamble is None else int(n_preamble)
    if not 1 <= n_pre <= 65535:
        raise ConfigError(f"n_preamble={n_pre} is not valid: use 1 to 65535")
    sw = cfg.sync_word if sync_word is None else int(sync_word)
    payload = _check_symbols(payload_symbols, cfg)
    values, directions, durations = _symbol_plan(cfg, payload, n_pre, sw)
    if n_samples is None:
        total_s = durations.sum() / cfg.bw_hz
        n_samples = int(np.ceil((total_s - t0_s) * cfg.fs_hz - 1e-9))
    out = _synthesize(cfg, values, directions, durations, int(n_samples), t0_s)
    if cfo_hz or phase_rad:
        t = t0_s + np.arange(out.size) / cfg.fs_hz
        out *= np.exp(1j * (2 * np.pi * cfo_hz * t + phase_rad))
    return out.astype(np.complex64)
