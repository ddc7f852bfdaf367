"""The frequency trajectory of a LoRa packet as linear pieces, for synthesis with a perturbed phase.

:mod:`lorarffi.dsp.chirp` synthesises the ideal packet from phase-continuous chirp segments. Hardware effects
that act on the *frequency* (PLL sweep nonlinearity, settling transients after each frequency jump) need the
same segment model split at every frequency jump: a *piece* is a stretch where the ideal instantaneous
frequency rises or falls linearly, ``f(t) = f_start + rate * (t - t_start)``; pieces start at each symbol
boundary and at the +bw/2 -> -bw/2 wrap inside a modulated up-chirp. The ideal phase computed here equals
:func:`lorarffi.dsp.chirp.packet_waveform` (the test suite checks it); perturbations are integrated
analytically, so they are exact at any sample rate even when their time constants are shorter than a sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.polynomial import legendre

from lorarffi.dsp.chirp import sync_word_symbols
from lorarffi.dsp.config import LoRaConfig

__all__ = ["Pieces", "packet_pieces", "Located", "locate", "ideal_phase", "sweep_phase", "transient_phase"]


@dataclass(frozen=True)
class Pieces:
    """Linear-frequency pieces of one packet (all arrays shape (P,), float64, times from the packet start)."""

    t_start_s: npt.NDArray[np.float64]
    f_start_hz: npt.NDArray[np.float64]
    rate_hz_per_s: npt.NDArray[np.float64]
    jump_hz: npt.NDArray[np.float64]  # f_start minus the previous piece's end frequency (0 for the first)
    duration_s: float  # packet duration


def packet_pieces(cfg: LoRaConfig, payload: npt.NDArray[np.int64], n_preamble: int, sync_word: int) -> Pieces:
    """Split a packet (preamble, sync word, 2.25 down-chirp SFD, payload) into linear-frequency pieces."""
    bw, n_chips = cfg.bw_hz, cfg.n_chips
    slope = bw * bw / n_chips
    sym_s = n_chips / bw
    s1, s2 = sync_word_symbols(sync_word)
    values = np.concatenate([np.zeros(n_preamble), [s1, s2], [0, 0, 0], payload]).astype(np.float64)
    up = np.concatenate([np.ones(n_preamble + 2, bool), np.zeros(3, bool), np.ones(payload.size, bool)])
    dur = np.concatenate(
        [np.full(n_preamble + 2, sym_s), [sym_s, sym_s, sym_s / 4], np.full(payload.size, sym_s)]
    )
    seg_t0 = np.concatenate(([0.0], np.cumsum(dur)[:-1]))
    f0 = np.where(up, -bw / 2 + values * bw / n_chips, bw / 2)
    rate = np.where(up, slope, -slope)
    # An up-chirp with a value > 0 wraps from +bw/2 to -bw/2 after (bw/2 - f0)/slope seconds.
    wraps = up & (values > 0)
    t_wrap = seg_t0 + (bw / 2 - f0) / slope
    t_start = np.concatenate([seg_t0, t_wrap[wraps]])
    f_start = np.concatenate([f0, np.full(int(wraps.sum()), -bw / 2)])
    rates = np.concatenate([rate, np.full(int(wraps.sum()), slope)])
    order = np.argsort(t_start, kind="stable")
    t_start, f_start, rates = t_start[order], f_start[order], rates[order]
    ends = np.concatenate((t_start[1:], [seg_t0[-1] + dur[-1]]))
    f_end = f_start + rates * (ends - t_start)
    jump = np.concatenate(([0.0], f_start[1:] - f_end[:-1]))
    return Pieces(t_start, f_start, rates, jump, float(seg_t0[-1] + dur[-1]))


@dataclass(frozen=True)
class Located:
    """Times located on the pieces: piece index ``k`` and time into it ``tau_s`` (same shape as ``t``)."""

    k: npt.NDArray[np.intp]
    tau_s: npt.NDArray[np.float64]


def locate(pieces: Pieces, t_s: npt.NDArray[np.float64]) -> Located:
    """Find the piece each time lies in (before the packet: the first piece, after it: the last)."""
    k = np.clip(np.searchsorted(pieces.t_start_s, t_s, side="right") - 1, 0, pieces.t_start_s.size - 1)
    return Located(k, t_s - pieces.t_start_s[k])


def ideal_phase(pieces: Pieces, loc: Located) -> npt.NDArray[np.float64]:
    """Ideal (phase-continuous) packet phase in radians at the located times."""
    dur = np.diff(np.append(pieces.t_start_s, pieces.duration_s))
    piece_phase = 2 * np.pi * (pieces.f_start_hz * dur + 0.5 * pieces.rate_hz_per_s * dur**2)
    start_phase = np.concatenate(([0.0], np.cumsum(piece_phase)[:-1]))
    k, tau = loc.k, loc.tau_s
    return start_phase[k] + 2 * np.pi * (pieces.f_start_hz[k] * tau + 0.5 * pieces.rate_hz_per_s[k] * tau**2)


def sweep_phase(
    pieces: Pieces, loc: Located, coeffs_hz: npt.NDArray[np.float64], bw_hz: float
) -> npt.NDArray[np.float64]:
    """Phase (rad) of a frequency deviation ``sum_k c_k P_k(f/(bw/2))`` (Legendre ``P_1, P_2, ...``).

    ``loc`` has shape (N, L) and ``coeffs_hz`` shape (N, K): one polynomial per row. The deviation depends on
    the ideal instantaneous frequency ``f``, as a VCO/PLL tuning nonlinearity does, and is integrated exactly.
    """
    coeffs = np.concatenate(
        [np.zeros((coeffs_hz.shape[0], 1)), coeffs_hz], axis=1
    )  # no P_0 term: that is CFO
    anti = np.stack([legendre.legint(c) for c in coeffs])  # (N, K+2): antiderivative Q(u) in Legendre basis
    half = bw_hz / 2
    dur = np.diff(np.append(pieces.t_start_s, pieces.duration_s))
    u0 = pieces.f_start_hz / half
    u1 = (pieces.f_start_hz + pieces.rate_hz_per_s * dur) / half
    du_dt = pieces.rate_hz_per_s / half  # (P,)
    q0 = np.stack([legendre.legval(u0, a) for a in anti])  # (N, P)
    q1 = np.stack([legendre.legval(u1, a) for a in anti])
    piece_int = (q1 - q0) / du_dt  # integral of the deviation over each piece, in Hz*s = cycles
    start = np.concatenate((np.zeros((coeffs.shape[0], 1)), np.cumsum(piece_int, axis=1)[:, :-1]), axis=1)
    k = loc.k
    u = (pieces.f_start_hz[k] + pieces.rate_hz_per_s[k] * loc.tau_s) / half
    rows = np.arange(k.shape[0])[:, None]
    q = _legval_rows(u, anti)
    cycles = start[rows, k] + (q - q0[rows, k]) / du_dt[k]
    return 2 * np.pi * cycles


def _legval_rows(u: npt.NDArray[np.float64], coeffs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Legendre series with per-row coefficients: ``u`` (N, L), ``coeffs`` (N, K) -> (N, L) (Clenshaw)."""
    n_k = coeffs.shape[1]
    b1 = np.zeros_like(u)
    b2 = np.zeros_like(u)
    for j in range(n_k - 1, 0, -1):
        alpha = (2 * j + 1) / (j + 1)
        beta = (j + 1) / (j + 2)
        b1, b2 = coeffs[:, j : j + 1] + alpha * u * b1 - beta * b2, b1
    return coeffs[:, :1] + u * b1 - 0.5 * b2


def transient_phase(
    pieces: Pieces,
    loc: Located,
    overshoot: npt.NDArray[np.float64],
    time_constant_s: npt.NDArray[np.float64],
    ring_hz: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Phase (rad) of the PLL settling error after every frequency jump, integrated exactly.

    After a jump of ``J`` Hz at ``t_j`` the output frequency misses its target by
    ``-overshoot * J * exp(-t'/tau) * (cos(w t') - sin(w t') / (w tau))``, ``t' = t - t_j``,
    ``w = 2 pi ring_hz`` (``-overshoot * J * exp(-t'/tau) * (1 - t'/tau)`` without ringing): the loop lags by
    a fraction ``overshoot`` of the jump, rings while it settles, and, as a type-II (charge-pump) PLL does,
    ends with no phase error, so the error integrates to zero and does not shift the packet's mean frequency.
    Per-row parameters have shape (N, 1); ``loc`` (N, L). Earlier jumps have settled (time constants are
    microseconds, jumps at least a quarter symbol apart).
    """
    alpha = 1.0 / time_constant_s  # (N, 1)
    w = 2 * np.pi * ring_hz
    k = loc.k
    dt = np.maximum(loc.tau_s, 0.0)
    partial = np.zeros(dt.shape)
    # exp(-dt/tau) is below 1e-9 after 21 time constants: evaluate the settling only where it matters.
    near = dt < 21.0 * time_constant_s
    d = dt[near]
    al = np.broadcast_to(alpha, dt.shape)[near]
    wn = np.broadcast_to(w, dt.shape)[near]
    ringing = wn > 0
    # integral of exp(-al t)(cos(w t) - al/w sin(w t)) from 0 to d, i.e. Re[(1 + j al/w)(1 - e^{-a d})/a]
    # with a = al - j w; it simplifies to exp(-al d) sin(w d) / w. Without ringing: d exp(-al d).
    safe_w = np.where(ringing, wn, 1.0)
    partial[near] = np.where(ringing, np.exp(-al * d) * np.sin(wn * d) / safe_w, d * np.exp(-al * d))
    cycles = -overshoot * pieces.jump_hz[k] * partial
    return 2 * np.pi * cycles
