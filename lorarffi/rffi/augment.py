"""Per-batch augmentation of preprocessed preambles for training.

Each packet gets its own random multipath channel (exponential power-delay profile, Rician first path, static
over the packet; Shen et al., TIFS 2022, §V-A), CFO shift and white noise at a random in-band SNR, in that
order. :meth:`Augmenter.draw` draws the per-packet parameters, :meth:`Augmenter.apply` applies them (and draws
the noise); the impairments themselves are :mod:`lorarffi.sim.channel`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError
from lorarffi.sim.channel import MultipathChannel, add_awgn, apply_multipath, draw_multipath, frequency_shift

__all__ = ["AUGMENTATIONS", "Augmenter", "AugmentDraws"]

AUGMENTATIONS = ("awgn", "multipath", "cfo")


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
    """

    channel: MultipathChannel | None
    cfo_shift_hz: npt.NDArray[np.float64] | None
    snr_db: npt.NDArray[np.float64] | None


@dataclass(frozen=True)
class Augmenter:
    """Random impairments drawn per packet from ``rng``.

    Parameters
    ----------
    kinds : sequence of str
        Any of ``"awgn"``, ``"multipath"``, ``"cfo"``.
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
    """

    kinds: tuple[str, ...]
    fs_hz: float
    bw_hz: float = 125e3
    snr_db: tuple[float, float] = (5.0, 40.0)
    delay_spread_s: tuple[float, float] = (10e-9, 300e-9)
    k_factor: tuple[float, float] = (0.0, 10.0)
    cfo_shift_hz: float = 50.0

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
        return AugmentDraws(channel, shift, snr)

    def apply(
        self, iq: npt.ArrayLike, draws: AugmentDraws, rng: np.random.Generator
    ) -> npt.NDArray[np.complex64]:
        """Apply ``draws`` to a batch: multipath, frequency shift, then noise (drawn from ``rng``).

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
        return np.asarray(x, dtype=np.complex64)

    def __call__(self, iq: npt.ArrayLike, rng: np.random.Generator) -> npt.NDArray[np.complex64]:
        """Augment a batch (N, L) of complex64 packets with fresh draws from ``rng``; returns a new array."""
        x = np.asarray(iq, dtype=np.complex64)
        return self.apply(x, self.draw(x.shape[0], rng), rng)
