"""Per-batch augmentation of preprocessed preambles for training.

Each packet gets its own random multipath channel (exponential power-delay profile, Rician first path, static
over the packet; Shen et al., TIFS 2022, §V-A), CFO shift, white noise at a random in-band SNR and a random
receiver (LO phase noise, IQ imbalance, sample-clock error, DC offset, ADC quantisation), in that order.
:meth:`Augmenter.draw` draws the per-packet parameters, :meth:`Augmenter.apply` applies them (and draws the
noise); the impairments themselves are the simulator's (:mod:`lorarffi.sim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError
from lorarffi.sim.channel import MultipathChannel, add_awgn, apply_multipath, draw_multipath, frequency_shift
from lorarffi.sim.impairments import iq_imbalance, phase_noise
from lorarffi.sim.receiver import quantize

__all__ = ["AUGMENTATIONS", "Augmenter", "AugmentDraws", "ReceiverDraws"]

AUGMENTATIONS = ("awgn", "multipath", "cfo", "receiver")

_RX_TCXO_STD_HZ = 300.0  # carrier offset of the receiver-domain draw for TCXO-like packets, Hz (1 sigma)
_MAX_CLOCK_SHIFT = 0.5  # largest sample displacement of the first-order clock-error model, samples
_RX_ADC_BACKOFF_DB = 12.0  # RMS per component below full scale of the quantised packets, dB


def _small_clock_offset(
    iq: npt.NDArray[np.complex64], clock_ppm: npt.NDArray[np.float64]
) -> npt.NDArray[np.complex64]:
    """Rows as sampled by clocks ``clock_ppm`` fast, to first order: ``y[n] = x[n] - n e x'[n]``.

    The exact resampler is :func:`lorarffi.sim.receiver.sample_clock_offset` (about 17 ms per 8192-sample
    row, too slow per training batch); this one is an FFT derivative per batch. Its error is second order in
    the displacement ``n e``, which is kept below ``_MAX_CLOCK_SHIFT`` samples: on an SF7 preamble at 8x
    oversampling and 20 ppm (0.16 samples at the end) it differs from the exact resampler by about 15 % of the
    clock error's own effect, enough for a nuisance draw.
    """
    n, length = iq.shape
    eps = np.asarray(clock_ppm, dtype=np.float64) * 1e-6
    if np.any(np.abs(eps) * length > _MAX_CLOCK_SHIFT):
        raise ConfigError(
            f"clock error too large for {length}-sample rows: use |ppm| * L * 1e-6 <= {_MAX_CLOCK_SHIFT}"
        )
    f = np.fft.fftfreq(length).astype(np.float32)
    deriv = np.fft.ifft(np.fft.fft(iq, axis=1) * (2j * np.pi * f), axis=1)
    ramp = (eps[:, None] * np.arange(length)).astype(np.float32)
    return (iq - ramp * deriv).astype(np.complex64)


@dataclass(frozen=True)
class ReceiverDraws:
    """Per-packet parameters of the ``receiver`` augmentation (every array has shape (N,)).

    Attributes
    ----------
    offset_hz : ndarray of float64
        Where the packet sat in the receiver's band before CFO compensation, Hz: the receiver's impairments
        are applied there (its DC offset and IQ image then land where a real receiver's would after
        compensation), then the packet is shifted back.
    iq_gain_db, iq_phase_deg : ndarray of float64
        IQ imbalance of the receiver's demodulator.
    dc_offset : ndarray of complex128
        DC offset in units of the packet's RMS amplitude.
    phase_noise_rms_deg, phase_noise_corner_hz : ndarray of float64
        LO phase noise.
    clock_ppm : ndarray of float64
        Sample-clock error, ppm.
    quantized : ndarray of bool
        Quantise this packet with an 8-bit ADC.
    """

    offset_hz: npt.NDArray[np.float64]
    iq_gain_db: npt.NDArray[np.float64]
    iq_phase_deg: npt.NDArray[np.float64]
    dc_offset: npt.NDArray[np.complex128]
    phase_noise_rms_deg: npt.NDArray[np.float64]
    phase_noise_corner_hz: npt.NDArray[np.float64]
    clock_ppm: npt.NDArray[np.float64]
    quantized: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class AugmentDraws:
    """The random parameters of one augmented batch of N packets; None for a kind that is off.

    Attributes
    ----------
    channel : MultipathChannel or None
        N static multipath realisations.
    cfo_shift_hz : ndarray of float64, shape (N,), or None
        Frequency shift of every packet, Hz.
    snr_db : ndarray of float64, shape (N,), or None
        In-band SNR of the noise added to every packet, dB.
    receiver : ReceiverDraws or None
        The receiver of every packet.
    """

    channel: MultipathChannel | None
    cfo_shift_hz: npt.NDArray[np.float64] | None
    snr_db: npt.NDArray[np.float64] | None
    receiver: ReceiverDraws | None = None


@dataclass(frozen=True)
class Augmenter:
    """Random impairments drawn per packet from ``rng``.

    Parameters
    ----------
    kinds : sequence of str
        Any of ``"awgn"``, ``"multipath"``, ``"cfo"``, ``"receiver"``.
    fs_hz : float
        Sample rate, Hz.
    bw_hz : float
        LoRa bandwidth, Hz (the SNR is in-band, as the detector measures it).
    snr_db : tuple of float
        SNR range of the added noise, dB (relative to the packet's mean power).
    delay_spread_s : tuple of float
        RMS delay spread range of the exponential power delay profile, s.
    k_factor : tuple of float
        Range of the first path's Rician K-factor (linear).
    cfo_shift_hz : float
        Largest CFO shift, Hz (uniform in +-): the residual CFO the estimator leaves at low SNR.
    rx_iq_gain_db, rx_iq_phase_deg : float
        Largest receiver IQ gain (dB) and phase (deg) imbalance, uniform in +-.
    rx_dc_offset : float
        Largest receiver DC offset, in units of the packet's RMS amplitude (uniform magnitude, random phase).
    rx_phase_noise_rms_deg : float
        Largest receiver LO phase noise, degrees RMS (uniform from 0; corner uniform in 5-30 kHz).
    rx_clock_ppm : float
        Largest receiver sample-clock error, ppm (uniform in +-).
    rx_offset_hz : float
        Half of the packet's crystal-oscillator carrier offset, Hz: half the packets are placed uniformly in
        +- this before the receiver's impairments, the others near 0 (TCXO-like, 300 Hz RMS).
    rx_quantized_fraction : float
        Share of packets quantised by an 8-bit ADC (12 dB back-off).
    """

    kinds: tuple[str, ...]
    fs_hz: float
    bw_hz: float = 125e3
    snr_db: tuple[float, float] = (5.0, 40.0)
    delay_spread_s: tuple[float, float] = (10e-9, 300e-9)
    k_factor: tuple[float, float] = (0.0, 10.0)
    cfo_shift_hz: float = 50.0
    rx_iq_gain_db: float = 0.5
    rx_iq_phase_deg: float = 3.0
    rx_dc_offset: float = 0.03
    rx_phase_noise_rms_deg: float = 1.5
    rx_clock_ppm: float = 20.0
    rx_offset_hz: float = 20e3
    rx_quantized_fraction: float = 0.3

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in AUGMENTATIONS]
        if bad:
            raise ConfigError(
                f"augment={list(self.kinds)} has unknown kind(s) {bad}; valid are {list(AUGMENTATIONS)}"
            )

    @classmethod
    def from_kinds(cls, kinds: Sequence[str], fs_hz: float, **kw) -> Augmenter:
        """An Augmenter of the non-empty names in ``kinds`` (as parsed from ``--augment a,b``)."""
        return cls(tuple(k for k in kinds if k), fs_hz, **kw)

    def draw(self, n: int, rng: np.random.Generator) -> AugmentDraws:
        """Draw the parameters of ``n`` packets: channel, then CFO shift, then SNR (each kind that is on)."""
        channel = None
        if "multipath" in self.kinds:
            channel = draw_multipath(
                n,
                rms_delay_spread_s=rng.uniform(*self.delay_spread_s, n),
                k_factor=rng.uniform(*self.k_factor, n),
                doppler_hz=0.0,
                rng=rng,
            )
        shift = rng.uniform(-self.cfo_shift_hz, self.cfo_shift_hz, n) if "cfo" in self.kinds else None
        snr = rng.uniform(*self.snr_db, n) if "awgn" in self.kinds else None
        receiver = self._draw_receiver(n, rng) if "receiver" in self.kinds else None
        return AugmentDraws(channel, shift, snr, receiver)

    def _draw_receiver(self, n: int, rng: np.random.Generator) -> ReceiverDraws:
        crystal = rng.random(n) < 0.5
        offset = np.where(
            crystal,
            rng.uniform(-self.rx_offset_hz, self.rx_offset_hz, n),
            _RX_TCXO_STD_HZ * rng.standard_normal(n),
        )
        return ReceiverDraws(
            offset_hz=offset,
            iq_gain_db=rng.uniform(-self.rx_iq_gain_db, self.rx_iq_gain_db, n),
            iq_phase_deg=rng.uniform(-self.rx_iq_phase_deg, self.rx_iq_phase_deg, n),
            dc_offset=rng.uniform(0.0, self.rx_dc_offset, n) * np.exp(2j * np.pi * rng.random(n)),
            phase_noise_rms_deg=rng.uniform(0.0, self.rx_phase_noise_rms_deg, n),
            phase_noise_corner_hz=rng.uniform(5e3, 30e3, n),
            clock_ppm=rng.uniform(-self.rx_clock_ppm, self.rx_clock_ppm, n),
            quantized=rng.random(n) < self.rx_quantized_fraction,
        )

    def _apply_receiver(
        self, x: npt.NDArray[np.complex64], rx: ReceiverDraws, rng: np.random.Generator
    ) -> npt.NDArray[np.complex64]:
        """Receive every packet with its receiver at its place in the band, then shift it back."""
        x = frequency_shift(x, rx.offset_hz, fs_hz=self.fs_hz)
        x = phase_noise(
            x,
            phase_noise_rms_deg=rx.phase_noise_rms_deg,
            corner_hz=rx.phase_noise_corner_hz,
            fs_hz=self.fs_hz,
            rng=rng,
        )
        x = iq_imbalance(x, iq_gain_db=rx.iq_gain_db, iq_phase_deg=rx.iq_phase_deg)
        x = _small_clock_offset(x, rx.clock_ppm)
        rms = np.sqrt(np.mean(x.real**2 + x.imag**2, axis=1, dtype=np.float64))
        x = x + (rx.dc_offset * rms)[:, None].astype(np.complex64)
        q = np.flatnonzero(rx.quantized)
        if q.size:
            full_scale = (rms[q] / np.sqrt(2) * 10 ** (_RX_ADC_BACKOFF_DB / 20))[:, None]
            x[q] = quantize(x[q], adc_bits=8, full_scale=full_scale)
        return frequency_shift(x, -rx.offset_hz, fs_hz=self.fs_hz)

    def apply(
        self, iq: npt.ArrayLike, draws: AugmentDraws, rng: np.random.Generator
    ) -> npt.NDArray[np.complex64]:
        """Apply ``draws`` to a batch: multipath, frequency shift, noise, then the receiver (noise and phase
        noise drawn from ``rng``).

        Parameters
        ----------
        iq : array_like of complex64, shape (N, L)
            Preprocessed packets (not modified).
        draws : AugmentDraws
            Parameters of N packets, from :meth:`draw`.
        rng : numpy.random.Generator
            Source of the noise samples.

        Returns
        -------
        iq : ndarray of complex64, shape (N, L)
        """
        x = np.asarray(iq, dtype=np.complex64)
        if draws.channel is not None:
            x = apply_multipath(x, draws.channel, fs_hz=self.fs_hz)
        if draws.cfo_shift_hz is not None:
            x = frequency_shift(x, draws.cfo_shift_hz, fs_hz=self.fs_hz)
        if draws.snr_db is not None:
            x = add_awgn(x, draws.snr_db, reference="in_band", rng=rng, bw_hz=self.bw_hz, fs_hz=self.fs_hz)
        if draws.receiver is not None:
            x = self._apply_receiver(np.asarray(x, dtype=np.complex64), draws.receiver, rng)
        return np.asarray(x, dtype=np.complex64)

    def __call__(self, iq: npt.ArrayLike, rng: np.random.Generator) -> npt.NDArray[np.complex64]:
        """Augment a batch (N, L) of complex64 packets with fresh draws from ``rng``; returns a new array."""
        x = np.asarray(iq, dtype=np.complex64)
        return self.apply(x, self.draw(x.shape[0], rng), rng)
