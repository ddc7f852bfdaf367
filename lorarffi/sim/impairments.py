"""Transmitter hardware impairments: pure vectorised functions on complex64 IQ with physical parameters.

Every function takes IQ of shape (N, L) or (L,) and per-packet parameters as scalars or arrays of shape (N,),
returns a new complex64 array of the same shape and never writes into its argument. Randomness (phase noise)
comes from an explicit ``rng``.

The transmitter model (chained by :func:`lorarffi.sim.transmitter.transmit`), in signal order:

1. :func:`pll_packet_waveform`: the packet's chirps synthesised with a perturbed frequency trajectory. A LoRa
   transmitter (SX127x/SX126x) makes its chirps by modulating a fractional-N PLL directly, so the sweep is not
   perfectly linear (VCO tuning nonlinearity, :func:`pll_packet_waveform`'s ``sweep_coeffs_hz``) and the loop
   needs microseconds to settle after each frequency jump at a symbol boundary (``transient_*``); the PA ramps
   up and down at the packet edges (``pa_ramp_s``; SX1276 ``RegPaRamp`` default 40 us).
2. :func:`phase_noise`: carrier phase noise of the PLL (Ornstein-Uhlenbeck: white frequency noise filtered by
   the loop, with an RMS in degrees and a corner frequency in Hz).
3. :func:`iq_imbalance` (one branch only, unlike TorchSig's ``iq_imbalance`` which scales both I and Q) and
   :func:`dc_offset` (carrier leakage).
4. :func:`tx_filter_ripple`: passband amplitude ripple of the transmit filter/matching network.
5. :func:`pa_nonlinearity`: Rapp AM/AM and Saleh-type AM/PM. A LoRa chirp has a constant envelope, so the PA
   acts only where steps 1-4 make the envelope vary; that is physically right, not an omission.

The carrier frequency offset is applied after all of these (the offset LO up-converts the impaired baseband),
see :func:`lorarffi.sim.channel.frequency_shift`.

Ranges and sources are documented in :func:`lorarffi.sim.fleet.make_fleet`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import fft as sp_fft
from scipy import signal

from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError
from lorarffi.sim import trajectory
from lorarffi.sim.batch import as_batch, per_packet_column, unbatch

__all__ = [
    "pll_packet_waveform",
    "phase_noise",
    "iq_imbalance",
    "dc_offset",
    "tx_filter_ripple",
    "pa_nonlinearity",
]

ArrayLikeF = float | npt.ArrayLike


def pll_packet_waveform(
    cfg: LoRaConfig,
    payload_symbols: npt.ArrayLike = (),
    *,
    n_samples: int,
    t0_s: ArrayLikeF = 0.0,
    n_preamble: int | None = None,
    sync_word: int | None = None,
    sweep_coeffs_hz: npt.ArrayLike = (),
    transient_overshoot: ArrayLikeF = 0.0,
    transient_time_constant_s: ArrayLikeF = 2e-6,
    transient_ring_hz: ArrayLikeF = 0.0,
    pa_ramp_s: ArrayLikeF = 0.0,
) -> npt.NDArray[np.complex64]:
    """LoRa packets synthesised with a perturbed PLL frequency trajectory and PA on/off ramps.

    With all impairments zero (``pa_ramp_s=0``) this equals :func:`lorarffi.dsp.chirp.packet_waveform`.

    Parameters
    ----------
    cfg : LoRaConfig
        SF, bandwidth and sample rate; ``cfg.preamble_symbols`` and ``cfg.sync_word`` are the defaults.
    payload_symbols : array_like of int
        Payload symbol values (the same for every row).
    n_samples : int
        Samples per row.
    t0_s : float or array of shape (N,)
        Time of sample 0 of each row relative to the packet start, in s (``-d`` delays the packet by ``d``,
        fractional samples included). Its length sets the number of rows N.
    n_preamble, sync_word : int, optional
        Preamble up-chirps and sync word sent.
    sweep_coeffs_hz : array_like, shape (K,) or (N, K)
        Frequency deviation along each sweep, in Hz, as Legendre coefficients ``c_1..c_K`` of the normalised
        ideal instantaneous frequency ``u = f / (bw/2)`` in [-1, 1]: ``delta_f = sum_k c_k P_k(u)``. ``c_1``
        is a chirp-rate error, ``c_2`` a bow, ``c_3`` an S-shape. No ``c_0``: a constant deviation is CFO.
    transient_overshoot : float or (N,)
        Fraction of each frequency jump the PLL does not follow instantly (0 = ideal two-point modulation).
        The settling error integrates to zero (a type-II PLL ends without phase error), so it leaves the
        packet's mean frequency alone; see :func:`lorarffi.sim.trajectory.transient_phase`.
    transient_time_constant_s : float or (N,)
        Exponential settling time constant after a jump, in s.
    transient_ring_hz : float or (N,)
        Ringing frequency of the settling error, in Hz (0 = critically damped, no ringing).
    pa_ramp_s : float or (N,)
        Duration of the raised-cosine PA ramp-up at the packet start and ramp-down at its end, in s.

    Returns
    -------
    iq : ndarray of complex64, shape (N, n_samples) or (n_samples,) for a scalar ``t0_s``
        Unit-amplitude baseband (no CFO), zero outside the packet.

    Examples
    --------
    >>> from lorarffi.dsp import packet_waveform
    >>> cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    >>> ideal = packet_waveform(cfg, [3, 9])
    >>> x = pll_packet_waveform(cfg, [3, 9], n_samples=ideal.size)
    >>> bool(np.abs(x - ideal).max() < 1e-4)
    True
    """
    single = np.ndim(t0_s) == 0
    t0 = np.atleast_1d(np.asarray(t0_s, dtype=np.float64))
    n = t0.size
    n_pre = cfg.preamble_symbols if n_preamble is None else int(n_preamble)
    sw = cfg.sync_word if sync_word is None else int(sync_word)
    payload = np.asarray(payload_symbols, dtype=np.int64).ravel()
    if payload.size and (payload.min() < 0 or payload.max() >= cfg.n_chips):
        raise ConfigError(f"payload symbol values must lie in 0..{cfg.n_chips - 1} for sf={cfg.sf}")
    pieces = trajectory.packet_pieces(cfg, payload, n_pre, sw)
    t = t0[:, None] + np.arange(int(n_samples)) / cfg.fs_hz
    loc = trajectory.locate(pieces, t)
    phase = trajectory.ideal_phase(pieces, loc)
    coeffs = np.asarray(sweep_coeffs_hz, dtype=np.float64)
    if coeffs.size:
        coeffs = np.broadcast_to(np.atleast_2d(coeffs), (n, coeffs.shape[-1]))
        phase += trajectory.sweep_phase(pieces, loc, coeffs, cfg.bw_hz)
    overshoot = per_packet_column(transient_overshoot, n, "transient_overshoot")
    if np.any(overshoot):
        tau = per_packet_column(transient_time_constant_s, n, "transient_time_constant_s")
        if np.any(tau <= 0):
            raise ConfigError("transient_time_constant_s must be > 0")
        ring_hz = per_packet_column(transient_ring_hz, n, "ring")
        phase += trajectory.transient_phase(pieces, loc, overshoot, tau, ring_hz)
    x = _cis(phase)
    ramp = per_packet_column(pa_ramp_s, n, "pa_ramp_s")
    x *= _ramp_envelope(t, pieces.duration_s, ramp).astype(np.float32)
    return unbatch(x, single)


def _cis(phase_rad: npt.NDArray[np.float64]) -> npt.NDArray[np.complex64]:
    """``exp(j*phase)`` as complex64 (the phase reduced to one turn in float64 first, then float32 trig)."""
    ph = np.remainder(phase_rad, 2 * np.pi).astype(np.float32)
    out = np.empty(ph.shape, np.complex64)
    np.cos(ph, out=out.real)
    np.sin(ph, out=out.imag)
    return out


def _ramp_envelope(
    t_s: npt.NDArray[np.float64], duration_s: float, ramp_s: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Raised-cosine on/off envelope: 0 outside [0, duration), rising over ``ramp_s`` at each edge."""
    env = ((t_s >= 0) & (t_s < duration_s)).astype(np.float64)
    ramp = np.broadcast_to(ramp_s, t_s.shape)
    edge = np.minimum(t_s, duration_s - t_s)
    on_ramp = (edge >= 0) & (edge < ramp)
    env[on_ramp] = 0.5 - 0.5 * np.cos(np.pi * edge[on_ramp] / ramp[on_ramp])
    return env


def phase_noise(
    iq: npt.ArrayLike,
    *,
    phase_noise_rms_deg: ArrayLikeF,
    corner_hz: ArrayLikeF,
    fs_hz: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.complex64]:
    """Multiply by ``exp(j*phi)``, phi a stationary PLL phase-noise process (Ornstein-Uhlenbeck).

    ``phi`` is white noise through a one-pole low-pass with corner ``corner_hz`` (the loop bandwidth: its PSD
    is flat below and falls 20 dB/decade above), scaled so its standard deviation is ``phase_noise_rms_deg``.

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L) or (L,)
    phase_noise_rms_deg : float or (N,)
        RMS phase error in degrees (TorchSig ``CarrierPhaseNoise`` default range 0.25-1 deg).
    corner_hz : float or (N,)
        Corner frequency of the phase-noise PSD in Hz.
    fs_hz : float
        Sample rate in Hz.
    rng : numpy.random.Generator

    Returns
    -------
    iq : ndarray of complex64, same shape as ``iq``
    """
    x, single = as_batch(iq)
    n = x.shape[0]
    sigma = np.deg2rad(per_packet_column(phase_noise_rms_deg, n, "phase_noise_rms_deg"))
    a = np.exp(-2 * np.pi * per_packet_column(corner_hz, n, "corner_hz") / fs_hz)
    w = rng.standard_normal(x.shape)
    phi = np.empty(x.shape)
    # phi[k] = a phi[k-1] + sigma*sqrt(1-a^2) w[k], started in its stationary distribution; rows differ in a.
    for row_a in np.unique(a):
        rows = np.flatnonzero(a[:, 0] == row_a)
        zi = row_a * rng.standard_normal((rows.size, 1))
        phi[rows] = signal.lfilter([np.sqrt(1 - row_a**2)], [1.0, -row_a], w[rows], axis=-1, zi=zi)[0]
    return unbatch(x * _cis(sigma * phi), single)


def iq_imbalance(
    iq: npt.ArrayLike, *, iq_gain_db: ArrayLikeF, iq_phase_deg: ArrayLikeF
) -> npt.NDArray[np.complex64]:
    """IQ gain and phase imbalance of an I/Q modulator, applied to the Q branch only.

    ``y = I + j*g*(Q*cos(phi) + I*sin(phi))`` with ``g = 10**(iq_gain_db/20)``: equivalently
    ``y = mu*x + nu*conj(x)``, ``mu = (1 + g e^{j phi})/2``, ``nu = (1 - g e^{-j phi})/2``, an image at
    ``|nu/mu|**2`` (about -36 dB for 0.2 dB and 1 deg). TorchSig's ``iq_imbalance`` scales both branches by
    the same factor, which is a gain, not an imbalance (ecosystem notes §4); this one does not.

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L) or (L,)
    iq_gain_db : float or (N,)
        Gain of the Q branch relative to I, in dB.
    iq_phase_deg : float or (N,)
        Quadrature error of the Q branch, in degrees.

    Returns
    -------
    iq : ndarray of complex64, same shape

    Examples
    --------
    >>> x = np.exp(2j * np.pi * 50 * np.arange(4000) / 4000).astype(np.complex64)
    >>> y = iq_imbalance(x, iq_gain_db=1.0, iq_phase_deg=0.0)
    >>> round(float(10 * np.log10(np.mean(y.imag**2) / np.mean(y.real**2))), 2)
    1.0
    """
    x, single = as_batch(iq)
    n = x.shape[0]
    g = 10 ** (per_packet_column(iq_gain_db, n, "iq_gain_db") / 20)
    phi = np.deg2rad(per_packet_column(iq_phase_deg, n, "iq_phase_deg"))
    q = g * (x.imag * np.cos(phi) + x.real * np.sin(phi))
    return unbatch(x.real + 1j * q, single)


def dc_offset(iq: npt.ArrayLike, *, dc_offset: complex | npt.ArrayLike) -> npt.NDArray[np.complex64]:
    """Add a complex DC offset (carrier leakage), in units of the signal amplitude (0.01 = -40 dBc).

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L) or (L,)
    dc_offset : complex or array of complex, shape (N,)

    Returns
    -------
    iq : ndarray of complex64, same shape
    """
    x, single = as_batch(iq)
    d = np.asarray(dc_offset, dtype=np.complex128)
    if d.ndim and d.shape != (x.shape[0],):
        raise ConfigError(f"dc_offset has shape {d.shape}: expected a scalar or shape ({x.shape[0]},)")
    return unbatch(x + (d[:, None] if d.ndim else d), single)


def tx_filter_ripple(
    iq: npt.ArrayLike,
    *,
    ripple_db: ArrayLikeF,
    ripple_period_hz: ArrayLikeF,
    ripple_phase_rad: ArrayLikeF = 0.0,
    fs_hz: float,
) -> npt.NDArray[np.complex64]:
    """Passband amplitude ripple of the transmit filter: a zero-phase gain ``ripple_db/2 * cos(...)`` dB.

    The gain at baseband frequency ``f`` is ``10**(ripple_db/2/20 * cos(2 pi f / ripple_period_hz + phase))``:
    ``ripple_db`` peak to peak (TorchSig ``PassbandRipple`` default 1-2 dB; a LoRa TX matching network shows a
    fraction of a dB across 125 kHz). Applied by FFT over each row (circularly; rows are zero-padded by half).

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L) or (L,)
    ripple_db : float or (N,)
        Peak-to-peak ripple in dB.
    ripple_period_hz : float or (N,)
        Period of the ripple across frequency, in Hz.
    ripple_phase_rad : float or (N,)
        Phase of the ripple at 0 Hz, in radians.
    fs_hz : float

    Returns
    -------
    iq : ndarray of complex64, same shape
    """
    x, single = as_batch(iq)
    n, length = x.shape
    period = per_packet_column(ripple_period_hz, n, "ripple_period_hz")
    if np.any(period <= 0):
        raise ConfigError("ripple_period_hz must be > 0")
    n_fft = _fast_len(length + length // 2)
    f = np.fft.fftfreq(n_fft, 1 / fs_hz)
    gain_db = (
        per_packet_column(ripple_db, n, "ripple_db")
        / 2
        * np.cos(2 * np.pi * f / period + per_packet_column(ripple_phase_rad, n, "phase"))
    )
    gain = (10 ** (gain_db / 20)).astype(np.float32)
    y = sp_fft.ifft(sp_fft.fft(x, n_fft, axis=-1) * gain, axis=-1)[:, :length]
    return unbatch(y, single)


def _fast_len(n: int) -> int:
    return sp_fft.next_fast_len(int(n))


def pa_nonlinearity(
    iq: npt.ArrayLike,
    *,
    saturation: ArrayLikeF,
    smoothness: ArrayLikeF = 2.0,
    am_pm_deg: ArrayLikeF = 0.0,
) -> npt.NDArray[np.complex64]:
    """Memoryless power-amplifier model: Rapp AM/AM and Saleh-type AM/PM.

    ``|y| = r / (1 + (r/A)**(2p))**(1/(2p))`` and ``arg y = arg x + am_pm * (r/A)**2 / (1 + (r/A)**2)``,
    with ``r = |x|``, ``A = saturation`` (input amplitude at saturation, relative to the unit signal
    amplitude) and ``p = smoothness``. The output is not renormalised.

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L) or (L,)
    saturation : float or (N,)
        Saturation amplitude A (> 0), in units of the input amplitude.
    smoothness : float or (N,)
        Rapp smoothness p (> 0); large p approaches a hard limiter.
    am_pm_deg : float or (N,)
        Asymptotic AM/PM phase shift at high drive, in degrees.

    Returns
    -------
    iq : ndarray of complex64, same shape
    """
    x, single = as_batch(iq)
    n = x.shape[0]
    sat = per_packet_column(saturation, n, "saturation")
    p = per_packet_column(smoothness, n, "smoothness")
    if np.any(sat <= 0) or np.any(p <= 0):
        raise ConfigError("saturation and smoothness must be > 0")
    rel2 = (x.real**2 + x.imag**2) / (sat**2).astype(np.float32)
    gain = (1.0 + rel2 ** p.astype(np.float32)) ** (-1.0 / (2 * p)).astype(np.float32)
    am_pm = np.deg2rad(per_packet_column(am_pm_deg, n, "am_pm_deg")).astype(np.float32) * rel2 / (1.0 + rel2)
    return unbatch(x * gain * _cis(am_pm), single)
