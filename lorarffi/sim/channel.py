"""Propagation channel: AWGN (in-band or full-band SNR), Rician multipath, Jakes Doppler, CFO, timing.

All functions are vectorised over a batch (N, L) of complex64 IQ (a single (L,) row works too), take
per-packet parameters as scalars or arrays of shape (N,), return new arrays and draw randomness from an
explicit ``rng``.

Multipath follows Shen et al. 2022 (paper_notes §9.4): an exponential power-delay profile with RMS delay
spread 10-300 ns, Rician first path with K-factor 0-10 (linear), Jakes Doppler 0-100 Hz. Unlike the authors'
MATLAB augmentation, which puts paths on the 1 us sample grid (so 10-300 ns spreads collapse to one or two
taps), the paths here lie on a fine delay grid and reach the sample grid through band-limited
(Kaiser-windowed sinc) interpolation, so a 50 ns spread really is 50 ns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import fft as sp_fft
from scipy import signal

from lorarffi.errors import ConfigError
from lorarffi.sim.batch import as_batch, per_packet, unbatch

__all__ = [
    "SnrReference",
    "snr_range_db",
    "add_awgn",
    "in_band_to_full_band_snr_db",
    "MultipathChannel",
    "draw_multipath",
    "draw_two_cluster",
    "apply_multipath",
    "frequency_shift",
    "timing_shift",
    "SINC_HALF",
    "sinc_taps",
]

SnrReference = Literal["in_band", "full_band"]

_N_PATHS = 12  # paths of the exponential profile, the last at -30 dB (as the authors' augmentation.m)
_PDP_FLOOR_DB = -30.0
_N_SINUSOIDS = 16  # sum-of-sinusoids terms per scattered path
SINC_HALF = 12  # half-length of the interpolation kernel, samples
_KAISER_BETA = 8.0


# -- AWGN ----------------------------------------------------------------------------------------------------


def snr_range_db(snr_db: float | tuple[float, float]) -> tuple[float, float]:
    """An SNR given as one number or a range ``(low, high)`` in dB, as ``(low, high)``, checked.

    Raises
    ------
    ConfigError
        A bound is not finite, or ``high < low``.

    Examples
    --------
    >>> snr_range_db(12), snr_range_db((0, 30))
    ((12.0, 12.0), (0.0, 30.0))
    """
    lo, hi = (snr_db, snr_db) if np.ndim(snr_db) == 0 else tuple(snr_db)  # type: ignore[misc]
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ConfigError(f"snr_db={snr_db!r} is not valid: use a number or a range (low, high)")
    return float(lo), float(hi)


def in_band_to_full_band_snr_db(snr_db: float | npt.ArrayLike, *, bw_hz: float, fs_hz: float) -> npt.NDArray:
    """Convert an in-band SNR (noise counted within ``bw_hz``) to the full-band SNR (noise over ``fs_hz``).

    White noise spreads over ``fs_hz``; only ``bw_hz/fs_hz`` of it falls in the LoRa band, so the full-band
    SNR is lower by ``10*log10(fs_hz/bw_hz)`` dB (9.03 dB for 125 kHz at 1 MS/s).

    Examples
    --------
    >>> round(float(in_band_to_full_band_snr_db(20.0, bw_hz=125e3, fs_hz=1e6)), 2)
    10.97
    """
    return np.asarray(snr_db, dtype=np.float64) - 10 * np.log10(fs_hz / bw_hz)


def add_awgn(
    iq: npt.ArrayLike,
    snr_db: float | npt.ArrayLike,
    *,
    reference: SnrReference,
    rng: np.random.Generator,
    bw_hz: float | None = None,
    fs_hz: float | None = None,
    signal_power: float | npt.ArrayLike | None = None,
) -> npt.NDArray[np.complex64]:
    """Add complex white Gaussian noise at a given SNR per packet.

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L) or (L,)
    snr_db : float or (N,)
        Signal-to-noise ratio in dB, per packet.
    reference : {"in_band", "full_band"}
        ``"in_band"``: the noise power counted within the LoRa bandwidth ``bw_hz`` (what a LoRa receiver and
        the detector see; needs ``bw_hz`` and ``fs_hz``). ``"full_band"``: noise power over the whole sample
        rate, as the authors' ``awgn`` does (paper_notes §9.4).
    rng : numpy.random.Generator
    bw_hz, fs_hz : float, optional
        LoRa bandwidth and sample rate in Hz (``"in_band"`` only).
    signal_power : float or (N,), optional
        Signal power (mean ``|x|**2``) to refer the SNR to; default: the mean over each row.

    Returns
    -------
    iq : ndarray of complex64, same shape as ``iq``

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = add_awgn(np.ones(100_000, np.complex64), 10.0, reference="full_band", rng=rng)
    >>> round(float(10 * np.log10(1 / np.var(y))), 1)
    10.0
    """
    x, single = as_batch(iq)
    n = x.shape[0]
    snr = per_packet(snr_db, n, "snr_db")
    if reference == "in_band":
        if bw_hz is None or fs_hz is None:
            raise ConfigError("reference='in_band' needs bw_hz and fs_hz")
        if bw_hz > fs_hz:
            raise ConfigError(f"bw_hz={bw_hz:g} exceeds fs_hz={fs_hz:g}")
        snr = in_band_to_full_band_snr_db(snr, bw_hz=bw_hz, fs_hz=fs_hz)
    elif reference != "full_band":
        raise ConfigError(f"reference={reference!r} is not valid: use 'in_band' or 'full_band'")
    if signal_power is None:
        power = np.mean(np.abs(x) ** 2, axis=-1, dtype=np.float64)
    else:
        power = per_packet(signal_power, n, "signal_power")
    sigma = np.sqrt(power / 10 ** (snr / 10) / 2)[:, None]
    noise = rng.standard_normal((n, x.shape[1], 2), dtype=np.float32).view(np.complex64)[..., 0]
    return unbatch(x + sigma.astype(np.float32) * noise, single)


# -- multipath -----------------------------------------------------------------------------------------------


def _unit_pdp() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
    """Delays (grid step 1), normalised powers and RMS delay spread of the exponential profile's shape."""
    p = np.arange(_N_PATHS, dtype=np.float64)
    power = 10 ** (_PDP_FLOOR_DB / 10 * p / (_N_PATHS - 1))
    power /= power.sum()
    mean = np.sum(power * p)
    rms = float(np.sqrt(np.sum(power * (p - mean) ** 2)))
    return p, power, rms


@dataclass(frozen=True)
class MultipathChannel:
    """Realisations of a Rician multipath channel with Jakes Doppler, one per packet (row).

    Path gains are a continuous function of absolute time, so packets sent at different times through the
    same realisation see a channel that has evolved as the Doppler spread says.

    Attributes
    ----------
    path_delays_s : ndarray of float64, shape (N, P)
        Path delays in s (first path at 0).
    path_powers : ndarray of float64, shape (N, P)
        Average path powers (sum 1): the exponential power-delay profile.
    k_factor : ndarray of float64, shape (N,)
        Rician K-factor (linear) of the first path: LOS power over scattered power.
    doppler_hz : ndarray of float64, shape (N,)
        Maximum Doppler shift in Hz.
    los_phase_rad, los_cos : ndarray of float64, shape (N,)
        Phase of the line-of-sight component and cosine of its arrival angle (its Doppler is ``doppler_hz *
        cos``).
    sos_cos : ndarray of float64, shape (N, P, M)
        Cosines of the arrival angles of the sum-of-sinusoids terms of each scattered path.
    sos_gain : ndarray of complex128, shape (N, P, M)
        Complex Gaussian weights (unit variance) of those terms: each path gain is then exactly complex
        Gaussian at any instant (Rayleigh envelope), not only for many terms.
    """

    path_delays_s: npt.NDArray[np.float64]
    path_powers: npt.NDArray[np.float64]
    k_factor: npt.NDArray[np.float64]
    doppler_hz: npt.NDArray[np.float64]
    los_phase_rad: npt.NDArray[np.float64]
    los_cos: npt.NDArray[np.float64]
    sos_cos: npt.NDArray[np.float64]
    sos_gain: npt.NDArray[np.complex128]

    def __len__(self) -> int:
        return self.path_delays_s.shape[0]

    @property
    def rms_delay_spread_s(self) -> npt.NDArray[np.float64]:
        """RMS delay spread of each row's average power-delay profile, in s, shape (N,)."""
        mean = np.sum(self.path_powers * self.path_delays_s, axis=1, keepdims=True)
        return np.sqrt(np.sum(self.path_powers * (self.path_delays_s - mean) ** 2, axis=1))

    def take(self, rows: npt.ArrayLike) -> MultipathChannel:
        """The realisations at ``rows`` (repeats allowed), e.g. one device's channel for many packets."""
        idx = np.asarray(rows, dtype=np.intp)
        return MultipathChannel(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    @classmethod
    def concatenate(cls, channels: Sequence[MultipathChannel]) -> MultipathChannel:
        """The realisations of ``channels`` one after another, e.g. each packet's sender's channel."""
        return cls(*(np.concatenate([getattr(c, f) for c in channels]) for f in cls.__dataclass_fields__))

    def path_gains(self, t_s: npt.ArrayLike) -> npt.NDArray[np.complex128]:
        """Complex path gains at absolute times ``t_s`` (shape (N, T) or (T,)): shape (N, P, T).

        The first path is ``sqrt(K/(K+1) p_0) e^{j(2 pi f_d cos(a_0) t + phi_0)}`` plus a scattered part;
        every scattered part is a sum of ``M`` sinusoids with stratified random arrival angles (Clarke/Jakes)
        and complex Gaussian weights, whose autocorrelation is ``J_0(2 pi f_d tau)`` on average over
        realisations.
        """
        t = np.asarray(t_s, dtype=np.float64)
        t = np.broadcast_to(t, (len(self), t.shape[-1]))[:, None, None, :]  # (N, 1, 1, T)
        n_sin = self.sos_cos.shape[-1]
        k = self.k_factor[:, None]
        scatter_power = self.path_powers.copy()
        scatter_power[:, :1] /= k + 1.0
        w = (2 * np.pi * self.doppler_hz)[:, None, None, None]
        arg = w * self.sos_cos[..., None] * t
        terms = self.sos_gain[..., None] * np.exp(1j * arg)
        gains = np.sqrt(scatter_power / n_sin)[..., None] * terms.sum(axis=2)  # (N, P, T)
        los_amp = np.sqrt(k / (k + 1.0) * self.path_powers[:, :1])  # (N, 1)
        los = los_amp[..., None] * np.exp(
            1j * (w[:, :, 0] * self.los_cos[:, None, None] * t[:, 0] + self.los_phase_rad[:, None, None])
        )
        gains[:, :1] += los
        return gains


def draw_multipath(
    n: int,
    *,
    rms_delay_spread_s: float | npt.ArrayLike,
    k_factor: float | npt.ArrayLike,
    doppler_hz: float | npt.ArrayLike,
    rng: np.random.Generator,
) -> MultipathChannel:
    """Draw ``n`` independent Rician multipath realisations with an exponential power-delay profile.

    Parameters
    ----------
    n : int
        Number of realisations (rows).
    rms_delay_spread_s : float or (n,)
        RMS delay spread of the average power-delay profile in s (Shen et al. 2022: 5-300 ns; code 10-300 ns).
        The profile is exponential, truncated at -30 dB, on a grid scaled so the RMS spread is exact.
    k_factor : float or (n,)
        Rician K-factor of the first path (linear, 0 = Rayleigh; Shen et al.: 0-10).
    doppler_hz : float or (n,)
        Maximum Doppler shift in Hz (Shen et al.: 0-10 training, up to 100 emulated; 10 Hz = 12.4 km/h).
    rng : numpy.random.Generator

    Returns
    -------
    MultipathChannel
    """
    tau = per_packet(rms_delay_spread_s, n, "rms_delay_spread_s")
    k = per_packet(k_factor, n, "k_factor")
    fd = per_packet(doppler_hz, n, "doppler_hz")
    if np.any(tau < 0) or np.any(k < 0) or np.any(fd < 0):
        raise ConfigError("rms_delay_spread_s, k_factor and doppler_hz must be >= 0")
    grid, power, unit_rms = _unit_pdp()
    delays = tau[:, None] / unit_rms * grid[None, :]
    powers = np.broadcast_to(power, (n, _N_PATHS)).copy()
    m = np.arange(_N_SINUSOIDS)
    angles = 2 * np.pi * (m + rng.random((n, _N_PATHS, _N_SINUSOIDS))) / _N_SINUSOIDS
    return MultipathChannel(
        path_delays_s=delays,
        path_powers=powers,
        k_factor=k,
        doppler_hz=fd,
        los_phase_rad=rng.uniform(0, 2 * np.pi, n),
        los_cos=np.cos(rng.uniform(0, 2 * np.pi, n)),
        sos_cos=np.cos(angles),
        sos_gain=(
            rng.standard_normal((n, _N_PATHS, _N_SINUSOIDS))
            + 1j * rng.standard_normal((n, _N_PATHS, _N_SINUSOIDS))
        )
        / np.sqrt(2),
    )


def draw_two_cluster(
    n: int,
    *,
    rms_delay_spread_s: float | npt.ArrayLike,
    second_delay_s: float | npt.ArrayLike,
    second_power_db: float | npt.ArrayLike,
    k_factor: float | npt.ArrayLike,
    doppler_hz: float | npt.ArrayLike,
    rng: np.random.Generator,
) -> MultipathChannel:
    """Draw ``n`` realisations of a two-cluster channel: a direct cluster and a late reflection cluster.

    Each cluster has :func:`draw_multipath`'s exponential profile with the same RMS spread; the second starts
    ``second_delay_s`` after the first with ``second_power_db`` of its power (an outdoor link with one strong
    distant reflector, as in the clustered Saleh-Valenzuela and 3GPP TDL models). Only the first path of the
    first cluster has a line-of-sight part (``k_factor``). Powers are normalised to sum 1.

    Parameters
    ----------
    n : int
    rms_delay_spread_s : float or (n,)
        RMS delay spread within each cluster, s.
    second_delay_s : float or (n,)
        Delay of the second cluster's first path after the first cluster's, s (>= 0).
    second_power_db : float or (n,)
        Power of the second cluster relative to the first, dB.
    k_factor, doppler_hz : float or (n,)
        As in :func:`draw_multipath`.
    rng : numpy.random.Generator

    Returns
    -------
    MultipathChannel
        With twice :func:`draw_multipath`'s number of paths.
    """
    delay = per_packet(second_delay_s, n, "second_delay_s")
    if np.any(delay < 0):
        raise ConfigError("second_delay_s must be >= 0")
    ratio = 10 ** (per_packet(second_power_db, n, "second_power_db") / 10)
    first = draw_multipath(
        n, rms_delay_spread_s=rms_delay_spread_s, k_factor=k_factor, doppler_hz=doppler_hz, rng=rng
    )
    second = draw_multipath(
        n, rms_delay_spread_s=rms_delay_spread_s, k_factor=0.0, doppler_hz=doppler_hz, rng=rng
    )
    powers = np.concatenate([first.path_powers, second.path_powers * ratio[:, None]], axis=1)
    return dataclasses.replace(
        first,
        path_delays_s=np.concatenate([first.path_delays_s, second.path_delays_s + delay[:, None]], axis=1),
        path_powers=powers / powers.sum(axis=1, keepdims=True),
        sos_cos=np.concatenate([first.sos_cos, second.sos_cos], axis=1),
        sos_gain=np.concatenate([first.sos_gain, second.sos_gain], axis=1),
    )


def sinc_taps(delay_samples: npt.NDArray[np.float64], n_taps: int) -> npt.NDArray[np.float64]:
    """Kaiser-windowed sinc weights ``(..., n_taps)`` of tap ``k`` (lag ``k - SINC_HALF``) for each delay.

    Tap ``k`` weighs the sample ``k - SINC_HALF`` after the one nearest the wanted instant: it is
    ``sinc(k - SINC_HALF - delay)`` under a Kaiser window of half-length ``SINC_HALF + 1`` samples.
    """
    lag = np.arange(n_taps) - SINC_HALF - delay_samples[..., None]
    win = np.i0(_KAISER_BETA * np.sqrt(np.clip(1 - (lag / (SINC_HALF + 1)) ** 2, 0, None))) / np.i0(
        _KAISER_BETA
    )
    return np.sinc(lag) * win


def apply_multipath(
    iq: npt.ArrayLike,
    channel: MultipathChannel,
    *,
    fs_hz: float,
    t0_s: float | npt.ArrayLike = 0.0,
    block_samples: int = 64,
) -> npt.NDArray[np.complex64]:
    """Pass each row through its multipath realisation (time-varying when ``doppler_hz > 0``).

    Output sample ``n`` is ``sum_p g_p(t_n) x(t_n - tau_p)``, the fractional delays done by band-limited
    interpolation and ``g_p`` evaluated every ``block_samples`` samples and interpolated linearly in between
    (64 us at 1 MS/s: 0.04 rad of Doppler phase at 100 Hz; once per row when the Doppler phase changes by less
    than 0.05 rad over it). The first path keeps its timing: the output is not
    delayed, and has the same length as the input (the tail beyond it is dropped).

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L) or (L,)
    channel : MultipathChannel
        ``N`` realisations (one per row).
    fs_hz : float
        Sample rate in Hz.
    t0_s : float or (N,)
        Absolute time of each row's first sample in s (where each realisation is in its Doppler evolution).
    block_samples : int
        Shortest interval at which the path gains are evaluated (longer while the Doppler phase changes by
        less than 0.05 rad).

    Returns
    -------
    iq : ndarray of complex64, same shape as ``iq``
    """
    x, single = as_batch(iq)
    n, length = x.shape
    if len(channel) != n:
        raise ConfigError(f"channel has {len(channel)} realisations for {n} rows")
    t0 = per_packet(t0_s, n, "t0_s")
    delay = channel.path_delays_s * fs_hz  # (N, P) samples
    n_taps = 2 * SINC_HALF + 1 + int(np.ceil(delay.max()))
    kernel = sinc_taps(delay, n_taps)  # (N, P, K)
    pad = np.zeros((n, n_taps - 1 - SINC_HALF), np.complex64)
    xp = np.concatenate([pad, x, np.zeros((n, SINC_HALF), np.complex64)], axis=1)
    if not np.any(channel.doppler_hz):
        taps = np.einsum("npk,np->nk", kernel, channel.path_gains(t0[:, None])[..., 0])
        y = signal.fftconvolve(xp, taps.astype(np.complex64), mode="valid", axes=-1)
        return unbatch(y, single)
    # Gains change by at most 0.05 rad of Doppler phase between grid points (at least every block_samples).
    step = 0.05 * fs_hz / (2 * np.pi * channel.doppler_hz.max())
    if step >= length:  # slow fading: linear interpolation between the gains at both ends of the row
        t_ends = t0[:, None] + np.array([0.0, length / fs_hz])
        taps = np.einsum("npk,npj->njk", kernel, channel.path_gains(t_ends)).astype(np.complex64)
        y0 = signal.fftconvolve(xp, taps[:, 0], mode="valid", axes=-1)
        y1 = signal.fftconvolve(xp, taps[:, 1], mode="valid", axes=-1)
        alpha = (np.arange(length) / length).astype(np.float32)
        return unbatch(y0 + alpha * (y1 - y0), single)
    block_samples = max(int(block_samples), int(step))
    n_blocks = -(-length // block_samples)
    t_grid = t0[:, None] + np.arange(n_blocks + 1) * block_samples / fs_hz
    taps = np.einsum("npk,npj->njk", kernel, channel.path_gains(t_grid)).astype(np.complex64)  # (N, J+1, K)
    padded_len = n_blocks * block_samples
    xp = np.concatenate([xp, np.zeros((n, padded_len - length), np.complex64)], axis=1)
    s0, s1 = xp.strides
    windows = np.lib.stride_tricks.as_strided(
        xp,
        shape=(n, n_blocks, block_samples, n_taps),
        strides=(s0, block_samples * s1, s1, s1),
        writeable=False,
    )
    rev = taps[..., ::-1]
    y_a = np.matmul(windows, rev[:, :-1, :, None])[..., 0]  # (N, B, S)
    y_b = np.matmul(windows, rev[:, 1:, :, None])[..., 0]
    alpha = (np.arange(block_samples) / block_samples).astype(np.float32)
    y = (y_a * (1 - alpha) + y_b * alpha).reshape(n, padded_len)[:, :length]
    return unbatch(y, single)


# -- CFO and timing ------------------------------------------------------------------------------------------


def frequency_shift(
    iq: npt.ArrayLike, cfo_hz: float | npt.ArrayLike, *, fs_hz: float, t0_s: float | npt.ArrayLike = 0.0
) -> npt.NDArray[np.complex64]:
    """Shift each row in frequency by ``cfo_hz``: multiply by ``exp(j 2 pi cfo (t0 + n/fs))``.

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L) or (L,)
    cfo_hz : float or (N,)
        Frequency shift in Hz.
    fs_hz : float
    t0_s : float or (N,)
        Time of each row's first sample (sets the phase of the rotation), in s.

    Returns
    -------
    iq : ndarray of complex64, same shape
    """
    x, single = as_batch(iq)
    n, length = x.shape
    f = per_packet(cfo_hz, n, "cfo_hz")[:, None]
    t = per_packet(t0_s, n, "t0_s")[:, None] + np.arange(length) / fs_hz
    turns = np.remainder(f * t, 1.0).astype(np.float32) * np.float32(2 * np.pi)
    rot = np.empty(turns.shape, np.complex64)
    np.cos(turns, out=rot.real)
    np.sin(turns, out=rot.imag)
    return unbatch(x * rot, single)


def timing_shift(
    iq: npt.ArrayLike, shift_samples: float | npt.ArrayLike, *, period_samples: int | None = None
) -> npt.NDArray[np.complex64]:
    """Delay each row by ``shift_samples`` (fractional, either sign) with band-limited interpolation.

    Samples that would come from outside the row are taken from a periodic extension when ``period_samples``
    is given (an aligned preamble repeats every symbol up to a CFO phase step, which is estimated from the row
    and applied), otherwise they are zero.

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L) or (L,)
    shift_samples : float or (N,)
        Delay in samples; ``+1`` moves the content one sample later.
    period_samples : int, optional
        Period of the signal (``cfg.samples_per_symbol`` for an aligned preamble).

    Returns
    -------
    iq : ndarray of complex64, same shape
    """
    x, single = as_batch(iq)
    n, length = x.shape
    d = per_packet(shift_samples, n, "shift_samples")
    ext = SINC_HALF + int(np.ceil(np.abs(d).max()))
    if period_samples is not None:
        s = int(period_samples)
        if not 0 < s < length or ext > s:
            raise ConfigError(f"period_samples={period_samples} does not fit rows of {length} samples")
        step = np.sum(x[:, s:] * np.conj(x[:, :-s]), axis=1, dtype=np.complex128)
        rot = np.exp(1j * np.angle(step))[:, None].astype(np.complex64)  # phase advance over one period
        left = x[:, s - ext : s] * np.conj(rot)
        right = x[:, length - s : length - s + ext] * rot
    else:
        left = right = np.zeros((n, ext), np.complex64)
    xp = np.concatenate([left, x, right], axis=1)
    n_fft = sp_fft.next_fast_len(xp.shape[1])
    f = np.fft.fftfreq(n_fft)
    ramp = np.exp(-2j * np.pi * f * d[:, None]).astype(np.complex64)
    y = sp_fft.ifft(sp_fft.fft(xp, n_fft, axis=-1) * ramp, axis=-1)[:, ext : ext + length]
    return unbatch(y, single)
