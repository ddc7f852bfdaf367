"""Is a detected packet's fingerprint window shared with another LoRa packet of the same spreading factor?

A packet's fingerprint window (:attr:`~lorarffi.dsp.packet.Packet.preamble`) is aligned to its up-chirps and
CFO-compensated, so each of its symbols, dechirped, is one tone on one bin (bin 0, give or take the residual
timing and CFO). Another packet of the same spreading factor on the same channel overlapping it in time (its
preamble or payload) dechirps into tones at other bins: :func:`collision_flags` reports a window whose
strongest bin away from the packet's own stands well above the noise and within :data:`COLLISION_RATIO` of
the packet's own peak in at least two symbols. Packets of other spreading
factors dechirp into wideband noise and do not count.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.fft

from lorarffi.dsp.chirp import upchirp
from lorarffi.dsp.config import LoRaConfig

__all__ = ["collision_flags", "COLLISION_RATIO", "COLLISION_NOISE_RATIO"]

COLLISION_RATIO = 0.03
"""Interferer peak over the packet's own peak (-15 dB) above which a symbol is shared. A lone packet leaks at
most 1 / (pi * 3.5)**2 = 0.008 of its peak power beyond three bins of its own (half a bin off a bin)."""
COLLISION_NOISE_RATIO = 25.0
"""... and over the mean noise power per bin (noise exceeds 25 times its mean with probability e**-25)."""
_GUARD_BINS = 3  # bins either side of the packet's own peak left out of the interferer search
_MIN_SHARED = 2  # symbols of the window that must be shared


def collision_flags(preambles: npt.ArrayLike, cfg: LoRaConfig) -> npt.NDArray[np.bool_]:
    """Flag fingerprint windows that hold a second packet of the same spreading factor.

    Parameters
    ----------
    preambles : array_like of complex64, shape (N, L) or (L,)
        Fingerprint windows as the detector gives them (:attr:`Packet.preamble`: aligned, CFO-compensated),
        ``L = cfg.preamble_symbols * 2**sf * oversampling`` samples at ``cfg.fs_hz`` (an integer multiple of
        ``cfg.bw_hz``).
    cfg : LoRaConfig
        Spreading factor, bandwidth, the windows' sample rate and ``preamble_symbols``.

    Returns
    -------
    collided : ndarray of bool, shape (N,) or ()

    Examples
    --------
    >>> cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=250e3, preamble_symbols=8)
    >>> clean = np.tile(upchirp(cfg), 8)
    >>> shared = clean + 0.7 * np.roll(np.tile(upchirp(cfg, 40), 8), 33)
    >>> collision_flags(np.stack([clean, shared]), cfg).tolist()
    [False, True]
    """
    x = np.asarray(preambles, dtype=np.complex64)
    single = x.ndim == 1
    x = np.atleast_2d(x)
    n_chips = cfg.n_chips
    osr = int(round(cfg.fs_hz / cfg.bw_hz))
    n_sym = x.shape[1] // (n_chips * osr)
    sym = x[:, : n_sym * n_chips * osr].reshape(x.shape[0], n_sym, n_chips * osr)
    dechirped = sym * np.conj(upchirp(cfg))
    chips = dechirped.reshape(x.shape[0], n_sym, n_chips, osr).sum(axis=3)  # boxcar to the chip rate
    a = np.abs(scipy.fft.fft(chips, axis=2))
    p = a * a  # (N, n_sym, n_chips)
    # the packet's own bin: bin 0 of an exact alignment, a bin or two off at high SFs (chirp nonlinearity)
    k0 = np.argmax(p.sum(axis=1), axis=1)  # (N,)
    p = np.take_along_axis(p, ((np.arange(n_chips)[None, :] + k0[:, None]) % n_chips)[:, None, :], axis=2)
    own = p[:, :, 0]
    far = p[:, :, _GUARD_BINS + 1 : n_chips - _GUARD_BINS]
    second = far.max(axis=2)
    noise = np.median(far, axis=2) / np.log(2)  # median of Exp(mu) is mu ln 2: robust to the interferer
    shared = (second >= COLLISION_RATIO * own) & (second >= COLLISION_NOISE_RATIO * noise)
    out = shared.sum(axis=1) >= _MIN_SHARED
    return out[0] if single else out
