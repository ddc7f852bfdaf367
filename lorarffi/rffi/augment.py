"""Per-batch augmentation of preprocessed preambles for training.

Applied to preprocessed packets (:func:`~lorarffi.rffi.preprocess.preprocess_preambles`) before they are
normalised again and turned into features: a random multipath channel (exponential power
delay profile, Rician first path, static over the packet; TIFS 2022 §V-A), a CFO shift, and white noise at a
random in-band SNR. The impairments themselves are :mod:`lorarffi.sim.channel`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.errors import ConfigError
from lorarffi.sim.channel import add_awgn, apply_multipath, draw_multipath, frequency_shift

__all__ = ["AUGMENTATIONS", "Augmenter"]

AUGMENTATIONS = ("awgn", "multipath", "cfo")


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
    cfo_shift_hz : float
        Largest CFO shift, Hz (uniform in +-): the residual CFO the estimator leaves at low SNR.
    """

    kinds: tuple[str, ...]
    fs_hz: float
    bw_hz: float = 125e3
    snr_db: tuple[float, float] = (5.0, 40.0)
    delay_spread_s: tuple[float, float] = (10e-9, 300e-9)
    cfo_shift_hz: float = 50.0

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in AUGMENTATIONS]
        if bad:
            raise ConfigError(
                f"augment={list(self.kinds)} has unknown kind(s) {bad}; valid are {list(AUGMENTATIONS)}"
            )

    @classmethod
    def from_kinds(cls, kinds: Sequence[str], fs_hz: float, **kw) -> Augmenter:
        return cls(tuple(k for k in kinds if k), fs_hz, **kw)

    def __call__(self, iq: npt.NDArray[np.complex64], rng: np.random.Generator) -> npt.NDArray[np.complex64]:
        """Augment a batch (N, L) of complex64 packets; returns a new array."""
        x = np.asarray(iq, dtype=np.complex64)
        n = x.shape[0]
        if "multipath" in self.kinds:
            ch = draw_multipath(
                n,
                rms_delay_spread_s=rng.uniform(*self.delay_spread_s, n),
                k_factor=rng.uniform(0, 10, n),
                doppler_hz=0.0,
                rng=rng,
            )
            x = apply_multipath(x, ch, fs_hz=self.fs_hz)
        if "cfo" in self.kinds:
            x = frequency_shift(x, rng.uniform(-self.cfo_shift_hz, self.cfo_shift_hz, n), fs_hz=self.fs_hz)
        if "awgn" in self.kinds:
            x = add_awgn(
                x,
                rng.uniform(*self.snr_db, n),
                reference="in_band",
                rng=rng,
                bw_hz=self.bw_hz,
                fs_hz=self.fs_hz,
            )
        return np.asarray(x, dtype=np.complex64)
