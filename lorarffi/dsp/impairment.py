"""The transmitter's IQ image and carrier leakage, measured on each packet's preamble.

A transmitter's IQ gain and phase imbalance adds to its baseband chirp ``x`` the image ``b conj(x)`` (a
down-chirp) and its carrier leakage a constant ``d``, both before the carrier's phase and the channel act:
the received preamble symbol is ``h exp(j phi) (a x + b conj(x) + d)``. The ratios ``b / a`` (the image) and
``d / a`` (the leakage) are therefore properties of the transmitter alone, phase and all, whatever the carrier
phase, the gain and (for a channel flat across the 125-500 kHz band) the channel. The magnitude spectrograms
the networks see keep little of them: the leakage is a line at 0 Hz whose phase against the chirp is lost,
and the channel-independent spectrogram divides such lines out. Two transmitters of one chip model whose
spectrograms look alike can differ here by many standard errors (docs/models.md).

Each packet's symbols are first averaged coherently (:mod:`lorarffi.dsp.coherent`), then the average is
fitted by least squares as ``a x + b conj(x) + d`` with ``x`` the ideal up-chirp. The standard errors come
from the fit's residual (noise, and whatever a frequency-selective channel adds that the model does not
hold), so a packet in noise or multipath is measured with its own, wider uncertainty.
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

__all__ = ["TxImpairments", "tx_impairments"]

_ROWS_PER_BLOCK = 2048  # packets fitted at once: bounds the complex128 temporaries to about 100 MB at SF7


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
def _design(cfg: LoRaConfig) -> tuple[npt.NDArray[np.complex128], npt.NDArray[np.complex128]]:
    """The basis (sps, 3): chirp, its conjugate, a constant; and the inverse of its Gram matrix (3, 3)."""
    chirp = np.asarray(upchirp(cfg), np.complex128)
    basis = np.stack([chirp, chirp.conj(), np.ones_like(chirp)], axis=1)
    return basis, np.linalg.inv(basis.conj().T @ basis)


def tx_impairments(iq: npt.ArrayLike, cfg: LoRaConfig) -> TxImpairments:
    """Measure each packet's IQ image and carrier leakage (module docstring).

    Parameters
    ----------
    iq : array_like of complex, shape (N, L) or (L,)
        CFO-compensated preambles starting at the first up-chirp, ``L >= 2 * cfg.samples_per_symbol`` (the
        model's view of a CFO-compensating model: ``Embedder.preprocess(iq).iq``; any gain).
    cfg : LoRaConfig
        LoRa parameters of the capture.

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
    basis, gram_inv = _design(cfg)
    x = x[:, : (x.shape[1] // sps) * sps].astype(np.complex64, copy=False)
    for b0 in range(0, n, _ROWS_PER_BLOCK):
        rows = slice(b0, b0 + _ROWS_PER_BLOCK)
        avg = coherent_symbol_average(x[rows], sps).astype(np.complex128)  # (B, sps)
        coef = avg @ basis.conj() @ gram_inv.T  # (B, 3): a, b, d
        resid = avg - coef @ basis.T
        noise = np.sum(np.abs(resid) ** 2, axis=1) / (sps - 3)  # per-sample residual power
        amp2 = np.abs(coef[:, 0]) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            out.image[rows] = coef[:, 1] / coef[:, 0]
            out.leakage[rows] = coef[:, 2] / coef[:, 0]
            out.image_se[rows] = np.sqrt(noise * gram_inv[1, 1].real / amp2)
            out.leakage_se[rows] = np.sqrt(noise * gram_inv[2, 2].real / amp2)
    bad = ~(np.isfinite(out.image) & np.isfinite(out.leakage) & np.isfinite(out.image_se))
    if bad.any():
        out.image[bad] = out.leakage[bad] = np.nan
        out.image_se[bad] = out.leakage_se[bad] = np.nan
    return out
