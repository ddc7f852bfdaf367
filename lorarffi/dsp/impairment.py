"""The transmitter's IQ image and carrier leakage, measured on each packet's preamble.

A transmitter's IQ gain and phase imbalance adds to its baseband chirp ``x`` the image ``b conj(x)`` (a
down-chirp) and its carrier leakage a constant ``d``, both before the carrier's phase and the channel act:
the received preamble symbol is ``h exp(j phi) (a x + b conj(x) + d)``. The ratios ``b / a`` (the image) and
``d / a`` (the leakage) are therefore properties of the transmitter alone, phase and all, whatever the carrier
phase, the gain and (for a channel flat across the 125-500 kHz band) the channel. The magnitude spectrograms
the networks see keep little of them: the leakage is a line at 0 Hz whose phase against the chirp is lost,
and the channel-independent spectrogram divides such lines out. Two transmitters of one chip model whose
spectrograms look alike can differ here by many standard errors (docs/models.md).

A channel that is not flat across the band weighs each term at the frequencies it occupies: the chirp at
its instantaneous frequency ``f(t)``, its image (a down-chirp) at ``-f(t)``, the leakage at 0 Hz. The
received symbol is then ``G(f(t)) x + (b / a) G(-f(t)) conj(x) + (d / a) G(0)`` with ``G = a h exp(j phi)
H(f)`` the chirp's response (``H``: the channel and every filter after the transmitter's mixer, the
receiver's included). A fit with constant coefficients leaves part of ``G``'s shape in the image and the
leakage (a bias no residual shows, larger than the noise in multipath); so the fit is made in two steps:

1. ``G`` along the symbol, as a polynomial of degree :data:`CHANNEL_DEGREE` in the chirp's frequency (time
   and frequency are one axis on a chirp), fitted with the image and the leakage by least squares;
2. the image and the leakage against that response: ``y = A G(f) x + B G(-f) conj(x) + D`` by least
   squares, image ``B / A``, leakage ``D / (A G(0))``.

For a flat channel ``G`` is a constant and the two steps give the one-step fit's ratios. Each packet's
symbols are first averaged coherently (:mod:`lorarffi.dsp.coherent`). The standard errors come from the
second fit's residual (noise, and whatever the channel adds beyond the polynomial), so a packet in noise or
multipath is measured with its own, wider uncertainty; a packet whose channel fades 0 Hz measures its
leakage with a standard error to match.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.chirp import upchirp
from lorarffi.dsp.coherent import coherent_symbol_average
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError

__all__ = ["CHANNEL_DEGREE", "IQ_FIT", "TxImpairments", "iq_fit_name", "tx_impairments"]

CHANNEL_DEGREE = 2
"""Degree of the polynomial (in frequency across the band) that models the channel's response in the fit.

Measured on the open-set benchmark's simulated fleets (docs/models.md): degree 1 biases more than none under
a two-cluster channel; from 2 to 6 the figures are flat; 2 is the smallest degree on that plateau."""



def iq_fit_name(channel_degree: int) -> str:
    """The name of the fit with a channel response of ``channel_degree`` (0: the one-step fit)."""
    return f"chirp-response-legendre-{int(channel_degree)}"


IQ_FIT = iq_fit_name(CHANNEL_DEGREE)
"""Names the default measurement. A registry keeps, with each device's IQ statistics, the name of the fit
that made them; the IQ gate compares a packet only with statistics of the fit that measured it."""

_SAMPLES_PER_BLOCK = 1 << 20  # symbol samples fitted at once: the complex128 temporaries stay near 100 MB


@dataclass(frozen=True)
class TxImpairments:
    """Per packet: the transmitter's IQ image and carrier leakage relative to its chirp, with standard errors.

    Attributes
    ----------
    image : ndarray of complex128, shape (N,)
        ``b / a``: the image (conjugate chirp) over the chirp (about ``(g - 1) / 2 + j phi / 2`` for an IQ
        gain imbalance ``g`` and phase imbalance ``phi`` in radians, small).
    leakage : ndarray of complex128, shape (N,)
        ``d / a``: the carrier leakage over the chirp's amplitude.
    image_se, leakage_se : ndarray of float64, shape (N,)
        Standard errors of each (root of the expected squared error of the complex value). NaN everywhere for
        rows that cannot be measured (NaN in the input).
    """

    image: npt.NDArray[np.complex128]
    leakage: npt.NDArray[np.complex128]
    image_se: npt.NDArray[np.float64]
    leakage_se: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.image.size)

    def take(self, rows: npt.ArrayLike) -> TxImpairments:
        """These measurements at ``rows`` (an index array or boolean mask)."""
        return TxImpairments(self.image[rows], self.leakage[rows], self.image_se[rows], self.leakage_se[rows])

    @classmethod
    def unknown(cls, n: int) -> TxImpairments:
        """``n`` packets measured not at all (NaN): the IQ gate passes them."""
        nan = np.full(int(n), np.nan)
        return cls(nan.astype(np.complex128), nan.astype(np.complex128), nan.copy(), nan.copy())


@functools.lru_cache(maxsize=8)
def _design(cfg: LoRaConfig, degree: int) -> tuple[npt.NDArray[np.complex128], ...]:
    """The first step's basis and pseudo-inverse, and the response's polynomial basis at ``f`` and ``-f``.

    Returns ``chirp`` (sps,), ``pinv`` (degree + 3, sps): least squares for the coefficients of
    ``[P_k(t) x for k <= degree] + [conj(x), 1]`` with ``P_k`` the Legendre polynomials of the normalised
    frequency ``t`` in [-1, 1); ``poly`` (degree + 1, sps) and ``poly_mirror`` (degree + 1, sps): ``P_k(t)``
    and ``P_k(-t)``; ``poly_zero`` (degree + 1,): ``P_k(0)``."""
    chirp = np.asarray(upchirp(cfg), np.complex128)
    sps = chirp.size
    t = (np.arange(sps) - sps / 2) / (sps / 2)  # the up-chirp's frequency over half the bandwidth
    poly = np.polynomial.legendre.legvander(t, degree).T
    basis = np.concatenate([poly.T * chirp[:, None], np.stack([chirp.conj(), np.ones(sps)], axis=1)], axis=1)
    pinv = np.linalg.pinv(basis)
    poly_mirror = np.polynomial.legendre.legvander(-t, degree).T
    poly_zero = np.polynomial.legendre.legvander(np.zeros(1), degree)[0]
    return chirp, pinv, poly, poly_mirror, poly_zero


def tx_impairments(
    iq: npt.ArrayLike, cfg: LoRaConfig, *, channel_degree: int = CHANNEL_DEGREE
) -> TxImpairments:
    """Measure each packet's IQ image and carrier leakage (module docstring).

    Parameters
    ----------
    iq : array_like of complex, shape (N, L) or (L,)
        CFO-compensated preambles starting at the first up-chirp, ``L >= 2 * cfg.samples_per_symbol`` (the
        model's view of a CFO-compensating model: ``Embedder.preprocess(iq).iq``; any gain).
    cfg : LoRaConfig
        LoRa parameters of the capture.
    channel_degree : int
        Degree of the channel's polynomial response across the band (0: a flat channel, the one-step fit).

    Returns
    -------
    TxImpairments
        Arrays of shape (N,) (1-D input: shape (1,)).
    """
    x = np.atleast_2d(np.asarray(iq))
    if x.ndim != 2:
        raise ConfigError(f"preambles have shape {np.shape(iq)}, expected (N, L)")
    sps = cfg.samples_per_symbol
    n = x.shape[0]
    out = TxImpairments.unknown(n)
    if n == 0:
        return out
    if not 0 <= int(channel_degree) <= 8:
        raise ConfigError(f"channel_degree {channel_degree!r} is not valid: use 0 to 8")
    chirp, pinv, poly, poly_mirror, poly_zero = _design(cfg, int(channel_degree))
    k = int(channel_degree) + 1
    x = x[:, : (x.shape[1] // sps) * sps].astype(np.complex64, copy=False)
    block = max(1, _SAMPLES_PER_BLOCK // sps)
    for b0 in range(0, n, block):
        rows = slice(b0, b0 + block)
        avg = coherent_symbol_average(x[rows], sps).astype(np.complex128)  # (B, sps)
        response = (avg @ pinv.T)[:, :k]  # (B, k): the chirp's response G as Legendre coefficients
        basis = np.stack(  # (B, sps, 3): G(f) x, G(-f) conj(x), 1
            [(response @ poly) * chirp, (response @ poly_mirror) * chirp.conj(), np.ones_like(avg)], axis=2
        )
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            gram = np.einsum("bsi,bsj->bij", basis.conj(), basis)  # (B, 3, 3)
            solvable = np.isfinite(gram).all(axis=(1, 2)) & (np.abs(np.linalg.det(gram)) > 0)
            gram[~solvable] = np.eye(3)
            gram_inv = np.linalg.inv(gram)
            gram_inv[~solvable] = np.nan
            coef = np.einsum("bij,bsj,bs->bi", gram_inv, basis.conj(), avg)  # (B, 3): A, B, D
            resid = avg - np.einsum("bsi,bi->bs", basis, coef)
            noise = np.sum(np.abs(resid) ** 2, axis=1) / (sps - k - 2)  # per-sample residual power
            chirp_amp = coef[:, 0]
            at_zero = chirp_amp * (response @ poly_zero)  # the chirp's response at 0 Hz
            out.image[rows] = coef[:, 1] / chirp_amp
            out.leakage[rows] = coef[:, 2] / at_zero
            out.image_se[rows] = np.sqrt(noise * gram_inv[:, 1, 1].real) / np.abs(chirp_amp)
            out.leakage_se[rows] = np.sqrt(noise * gram_inv[:, 2, 2].real) / np.abs(at_zero)
    bad = ~(np.isfinite(out.image) & np.isfinite(out.leakage) & np.isfinite(out.image_se))
    if bad.any():
        out.image[bad] = out.leakage[bad] = np.nan
        out.image_se[bad] = out.leakage_se[bad] = np.nan
    return out
