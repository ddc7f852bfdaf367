"""Another receiver: the front end and ADC of an SDR other than the one a model was trained on.

A :class:`ReceiverProfile` describes a receiver; :func:`receive` passes rows of IQ at the simulator's rate
through it, in signal order:

1. its LO phase noise (:func:`lorarffi.sim.impairments.phase_noise`);
2. the IQ imbalance of its demodulator (:func:`lorarffi.sim.impairments.iq_imbalance`, image at
   ``|nu/mu|**2``);
3. its reference clock error ``clock_ppm``: the sample clock runs ``clock_ppm`` fast
   (:func:`sample_clock_offset`, a time scaling of the signal) and, when the carrier is given, the LO derived
   from the same reference is ``clock_ppm * carrier`` high, so every CFO drops by that much;
4. sampling at its own rate ``fs_hz`` (polyphase resampling);
5. its DC offset and an ``adc_bits`` ADC (:func:`quantize`) with the gain set so the input's RMS per
   component sits ``adc_backoff_db`` below full scale (an AGC);
6. resampling back to the simulator's rate, as a host would before handing samples to the model.

Every stage is off by default: ``ReceiverProfile()`` returns its input unchanged. :data:`RECEIVERS` names a
few. Randomness (phase noise) comes from an explicit ``rng``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from fractions import Fraction

import numpy as np
import numpy.typing as npt
from scipy import signal

from lorarffi.errors import ConfigError
from lorarffi.sim import impairments
from lorarffi.sim.batch import as_batch, per_packet, unbatch
from lorarffi.sim.channel import SINC_HALF, frequency_shift, sinc_taps

__all__ = [
    "ReceiverProfile",
    "RECEIVERS",
    "receive",
    "front_end",
    "adc",
    "sample_clock_offset",
    "quantize",
    "resample",
]

_MAX_RATE_TERMS = 1000  # largest up or down factor accepted for a rate change


@dataclass(frozen=True)
class ReceiverProfile:
    """One receiver's front end and ADC (every field's default switches its stage off).

    Attributes
    ----------
    fs_hz : float, optional
        Its sample rate in Hz (an integer number of Hz); ``None``: the simulator's rate.
    iq_gain_db, iq_phase_deg : float
        IQ gain and quadrature error of its demodulator's Q branch.
    dc_offset_i, dc_offset_q : float
        DC offset at the ADC input, in units of the input's RMS amplitude.
    adc_bits : int, optional
        ADC resolution in bits; ``None``: no quantisation.
    adc_backoff_db : float
        RMS per component of the ADC input below full scale, in dB.
    phase_noise_rms_deg, phase_noise_corner_hz : float
        LO phase noise: RMS in degrees and the corner of its spectrum in Hz.
    clock_ppm : float
        Error of its reference clock in ppm (sample clock, and the LO when the carrier is known).
    """

    fs_hz: float | None = None
    iq_gain_db: float = 0.0
    iq_phase_deg: float = 0.0
    dc_offset_i: float = 0.0
    dc_offset_q: float = 0.0
    adc_bits: int | None = None
    adc_backoff_db: float = 12.0
    phase_noise_rms_deg: float = 0.0
    phase_noise_corner_hz: float = 10e3
    clock_ppm: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and not np.isfinite(v):
                raise ConfigError(f"{f.name}={v!r} is not valid: use a finite number")
        if self.fs_hz is not None and (self.fs_hz <= 0 or self.fs_hz != round(self.fs_hz)):
            raise ConfigError(f"fs_hz={self.fs_hz!r} is not valid: use a positive whole number of Hz")
        if self.adc_bits is not None and not (isinstance(self.adc_bits, int) and 1 <= self.adc_bits <= 24):
            raise ConfigError(f"adc_bits={self.adc_bits!r} is not valid: use an integer in 1..24 or None")
        if self.phase_noise_rms_deg < 0 or self.phase_noise_corner_hz <= 0:
            raise ConfigError("phase_noise_rms_deg must be >= 0 and phase_noise_corner_hz > 0")
        if abs(self.clock_ppm) >= 1e4:
            raise ConfigError(f"clock_ppm={self.clock_ppm!r} is not valid: use |clock_ppm| < 1e4")


#: Named receivers. ``"ideal"`` does nothing. ``"sdr_8bit"``: an 8-bit SDR at 2.4 MS/s (an RTL2832U-class
#: dongle) with a 10 ppm reference, -32 dB image (0.3 dB, 2 deg), -37 dBc DC offset, 1 deg RMS LO phase noise.
RECEIVERS: dict[str, ReceiverProfile] = {
    "ideal": ReceiverProfile(),
    "sdr_8bit": ReceiverProfile(
        fs_hz=2.4e6,
        iq_gain_db=0.3,
        iq_phase_deg=2.0,
        dc_offset_i=0.012,
        dc_offset_q=-0.008,
        phase_noise_rms_deg=1.0,
        phase_noise_corner_hz=20e3,
        clock_ppm=10.0,
        adc_bits=8,
    ),
}


def receive(
    iq: npt.ArrayLike,
    receiver: ReceiverProfile,
    *,
    fs_hz: float,
    rng: np.random.Generator,
    carrier_freq_hz: float | npt.ArrayLike | None = None,
) -> npt.NDArray[np.complex64]:
    """Rows of IQ at the simulator's rate as ``receiver`` delivers them, back at that rate.

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L) or (L,)
        What reaches the antenna (signal and noise), sampled at ``fs_hz``. Each row is one capture: the
        resampling filters see its edges, so keep a margin of a few tens of samples around what you use.
    receiver : ReceiverProfile
    fs_hz : float
        The simulator's sample rate in Hz.
    rng : numpy.random.Generator
        Source of the LO phase noise.
    carrier_freq_hz : float or array of shape (N,), optional
        Carrier frequency of each row in Hz: the receiver's LO error ``clock_ppm * 1e-6 * carrier`` is then
        subtracted from the rows' CFO; ``None`` leaves the CFO alone.

    Returns
    -------
    iq : ndarray of complex64, same shape as ``iq``

    Examples
    --------
    >>> x = np.exp(2j * np.pi * 0.01 * np.arange(1000)).astype(np.complex64)
    >>> y = receive(x, ReceiverProfile(), fs_hz=1e6, rng=np.random.default_rng(0))
    >>> bool(np.array_equal(x, y))
    True
    """
    x, single = as_batch(iq)
    lo_offset_hz = 0.0
    if carrier_freq_hz is not None:
        lo_offset_hz = receiver.clock_ppm * 1e-6 * per_packet(carrier_freq_hz, x.shape[0], "carrier_freq_hz")
    x = front_end(x, receiver, fs_hz=fs_hz, rng=rng, lo_offset_hz=lo_offset_hz)
    rx_fs_hz = fs_hz if receiver.fs_hz is None else receiver.fs_hz
    y = resample(x, fs_hz, rx_fs_hz)
    rms = np.sqrt(np.mean(y.real**2 + y.imag**2, axis=-1, dtype=np.float64))[:, None]
    y = adc(y, receiver, reference_rms=rms)
    y = resample(y, rx_fs_hz, fs_hz)[:, : x.shape[1]]
    return unbatch(y, single)


def front_end(
    iq: npt.ArrayLike,
    receiver: ReceiverProfile,
    *,
    fs_hz: float,
    rng: np.random.Generator,
    lo_offset_hz: float | npt.ArrayLike = 0.0,
) -> npt.NDArray[np.complex64]:
    """Steps 1-3 of :func:`receive` (LO phase noise, IQ imbalance, clock error), at the simulator's rate.

    ``lo_offset_hz`` (a scalar or shape (N,)) is how far the receiver's LO sits above the nominal carrier:
    the rows shift down by it.
    """
    x, single = as_batch(iq)
    if receiver.phase_noise_rms_deg:
        x = impairments.phase_noise(
            x,
            phase_noise_rms_deg=receiver.phase_noise_rms_deg,
            corner_hz=receiver.phase_noise_corner_hz,
            fs_hz=fs_hz,
            rng=rng,
        )
    if receiver.iq_gain_db or receiver.iq_phase_deg:
        x = impairments.iq_imbalance(x, iq_gain_db=receiver.iq_gain_db, iq_phase_deg=receiver.iq_phase_deg)
    if np.any(lo_offset_hz):
        x = frequency_shift(x, -np.asarray(lo_offset_hz), fs_hz=fs_hz)
    if receiver.clock_ppm:
        x = sample_clock_offset(x, receiver.clock_ppm)
    return unbatch(x, single)


def adc(
    iq: npt.ArrayLike, receiver: ReceiverProfile, *, reference_rms: float | npt.ArrayLike
) -> npt.NDArray[np.complex64]:
    """Step 5 of :func:`receive`: DC offset and quantisation, levels relative to ``reference_rms``.

    ``reference_rms`` (a scalar or shape (N, 1)) is the RMS amplitude of the ADC input that the gain control
    aims at; the DC offset is in units of it and full scale is ``reference_rms / sqrt(2)`` per component
    times ``10**(adc_backoff_db / 20)``.
    """
    x, single = as_batch(iq)
    ref = np.asarray(reference_rms, dtype=np.float64)
    if receiver.dc_offset_i or receiver.dc_offset_q:
        dc = (receiver.dc_offset_i + 1j * receiver.dc_offset_q) * ref
        x = x + np.asarray(dc, np.complex64)
    if receiver.adc_bits is not None:
        full_scale = ref / np.sqrt(2) * 10 ** (receiver.adc_backoff_db / 20)
        x = quantize(x, adc_bits=receiver.adc_bits, full_scale=full_scale)
    return unbatch(x, single)


def sample_clock_offset(iq: npt.ArrayLike, clock_ppm: float) -> npt.NDArray[np.complex64]:
    """Rows as sampled by a clock ``clock_ppm`` fast: ``y[n] = x(n / (1 + clock_ppm * 1e-6))``.

    Band-limited (Kaiser-windowed sinc) interpolation between samples, from each row's first sample. What
    the input holds at sample ``m`` appears at sample ``m * (1 + clock_ppm * 1e-6)``: a fast clock takes more
    samples per second, so a packet's chirps arrive progressively later and last more samples. Samples
    needed from beyond the row's end are zero.

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L) or (L,)
    clock_ppm : float
        Sample clock error in ppm (positive: the clock is fast).

    Returns
    -------
    iq : ndarray of complex64, same shape
    """
    x, single = as_batch(iq)
    n, length = x.shape
    pos = np.arange(length) / (1.0 + clock_ppm * 1e-6)
    whole = np.floor(pos).astype(np.intp)
    n_taps = 2 * SINC_HALF + 1
    taps = sinc_taps(pos - whole, n_taps).astype(np.float32)  # (L, K)
    right = SINC_HALF + 1 + max(int(whole[-1]) - (length - 1), 0)  # a slow clock reads past the row's end
    xp = np.concatenate(
        [np.zeros((n, SINC_HALF), np.complex64), x, np.zeros((n, right), np.complex64)], axis=1
    )
    y = np.zeros((n, length), np.complex64)
    for k in range(n_taps):
        y += taps[:, k] * xp[:, whole + k]
    return unbatch(y, single)


def quantize(
    iq: npt.ArrayLike, *, adc_bits: int, full_scale: float | npt.ArrayLike
) -> npt.NDArray[np.complex64]:
    """Uniform mid-rise quantisation of I and Q to ``adc_bits`` bits over ``[-full_scale, full_scale]``.

    Levels are ``(k + 1/2) * q`` with step ``q = 2 * full_scale / 2**adc_bits``; inputs beyond full scale
    clip to the outermost level. For an input spread over many levels the error is uniform in
    ``[-q/2, q/2]``: variance ``q**2 / 12`` per component.

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L) or (L,)
    adc_bits : int
    full_scale : float or array broadcasting against (N, 1)
        Full-scale amplitude per component.

    Returns
    -------
    iq : ndarray of complex64, same shape

    Examples
    --------
    >>> quantize(np.array([0.3 - 0.9j, 2.0 + 0j], np.complex64), adc_bits=2, full_scale=1.0)
    array([0.25-0.75j, 0.75+0.25j], dtype=complex64)
    """
    x, single = as_batch(iq)
    step = (2.0 * np.asarray(full_scale, dtype=np.float64) / 2**adc_bits).astype(np.float32)
    top = np.float32(2 ** (adc_bits - 1) - 1)

    def levels(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return (np.clip(np.floor(v / step), -top - 1, top) + np.float32(0.5)) * step

    return unbatch(levels(x.real) + 1j * levels(x.imag), single)


def resample(iq: npt.ArrayLike, from_fs_hz: float, to_fs_hz: float) -> npt.NDArray[np.complex64]:
    """Rows resampled from ``from_fs_hz`` to ``to_fs_hz`` (polyphase, :func:`scipy.signal.resample_poly`).

    The rates must be whole numbers of Hz whose ratio reduces to factors of at most 1000. Returns the input
    unchanged when the rates are equal. Row length becomes ``ceil(L * to / from)``.
    """
    x, single = as_batch(iq)
    if from_fs_hz == to_fs_hz:
        return unbatch(x, single)
    ratio = Fraction(int(round(to_fs_hz)), int(round(from_fs_hz)))
    if ratio.numerator > _MAX_RATE_TERMS or ratio.denominator > _MAX_RATE_TERMS:
        raise ConfigError(
            f"cannot resample {from_fs_hz:g} Hz to {to_fs_hz:g} Hz: their ratio {ratio} needs factors "
            f"above {_MAX_RATE_TERMS}"
        )
    y = signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)
    return unbatch(y, single)
