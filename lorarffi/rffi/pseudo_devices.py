"""Pseudo-devices: more training identities for an embedding extractor, made from the training devices.

An extractor meets devices it never saw in training, and what it learns to tell apart is bounded by how many
identities it trained on (30 in the open-set protocol). Each training device is copied ``J`` times; every
copy passes the device's packets through one fixed transmitter transform drawn for that copy, and the copy
trains as a device of its own. The transform is what any I/Q transmitter adds on top of its chip: a
modulator's IQ gain and phase imbalance, carrier leakage (a DC offset) and a transmit-filter ripple across
the band (:mod:`lorarffi.sim.impairments`), each a fraction of the spread between real devices of one chip
model, so that a copy is a close look-alike of its original (a hard negative) rather than a stranger.

Both imbalance and leakage act before the carrier: on the transmitter's own baseband. A received preamble is
that baseband turned by the channel's phase, so each packet is turned back onto its ideal preamble's phase
first and forward again after, and a copy's image and leakage keep one phase relative to its chirps, as a
real device's do. The ripple is linear and time-invariant, so it commutes with that turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.chirp import upchirp
from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.normalize import rms_normalize
from lorarffi.errors import ConfigError
from lorarffi.sim.impairments import dc_offset, iq_imbalance, tx_filter_ripple

__all__ = ["PseudoDeviceDraw", "draw_pseudo_devices", "apply_pseudo_device", "add_pseudo_devices"]

# Ranges of each copy's transform (magnitudes; signs and phases are drawn uniformly). A look-alike fleet of
# one chip model spreads these by about 1.2 dB, 7.5 deg, 0.12 and 1.5 dB (one standard deviation,
# lorarffi.sim.fleet at spread 3): a copy moves its original by a fraction of that.
IQ_GAIN_DB = (0.1, 0.5)
IQ_PHASE_DEG = (0.5, 3.0)
DC_OFFSET = (0.005, 0.04)  # of the signal's amplitude: -46 to -28 dBc
RIPPLE_DB = (0.1, 0.6)  # peak to peak
RIPPLE_PERIOD_HZ = (10e3, 40e3)


@dataclass(frozen=True)
class PseudoDeviceDraw:
    """The fixed transmitter transform of one pseudo-device.

    Attributes
    ----------
    iq_gain_db, iq_phase_deg : float
        IQ imbalance of the Q branch, dB and degrees.
    dc_offset : complex
        Carrier leakage, in units of the signal's amplitude.
    ripple_db, ripple_period_hz, ripple_phase_rad : float
        Transmit-filter ripple: peak-to-peak dB, period across frequency (Hz), phase at 0 Hz (rad).
    """

    iq_gain_db: float
    iq_phase_deg: float
    dc_offset: complex
    ripple_db: float
    ripple_period_hz: float
    ripple_phase_rad: float


def draw_pseudo_devices(n: int, rng: np.random.Generator) -> list[PseudoDeviceDraw]:
    """``n`` independent pseudo-device transforms from the module's ranges."""
    draws = []
    for _ in range(int(n)):
        sign = rng.choice([-1.0, 1.0], 2)
        draws.append(
            PseudoDeviceDraw(
                iq_gain_db=float(sign[0] * rng.uniform(*IQ_GAIN_DB)),
                iq_phase_deg=float(sign[1] * rng.uniform(*IQ_PHASE_DEG)),
                dc_offset=complex(rng.uniform(*DC_OFFSET) * np.exp(2j * np.pi * rng.uniform())),
                ripple_db=float(rng.uniform(*RIPPLE_DB)),
                ripple_period_hz=float(rng.uniform(*RIPPLE_PERIOD_HZ)),
                ripple_phase_rad=float(rng.uniform(0.0, 2.0 * np.pi)),
            )
        )
    return draws


def apply_pseudo_device(
    iq: npt.ArrayLike, draw: PseudoDeviceDraw, cfg: LoRaConfig
) -> npt.NDArray[np.complex64]:
    """Preambles as the pseudo-device ``draw`` of their transmitter would have sent them.

    Parameters
    ----------
    iq : array_like of complex64, shape (N, L)
        CFO-compensated preambles starting at the first up-chirp (:func:`~lorarffi.rffi.preprocess.
        preprocess_preambles`), ``L <= cfg.preamble_samples``.
    draw : PseudoDeviceDraw
        The transform.
    cfg : LoRaConfig
        LoRa parameters of the packets (the ideal preamble that gives each packet's phase).

    Returns
    -------
    ndarray of complex64, shape (N, L)
        The transformed preambles, each with the phase of its input and unit RMS (as
        :func:`~lorarffi.rffi.preprocess.preprocess_preambles` gives them: :func:`~lorarffi.dsp.normalize.
        rms_normalize`).
    """
    x = np.atleast_2d(np.asarray(iq, dtype=np.complex64))
    length = x.shape[1]
    if length > cfg.preamble_samples:
        raise ConfigError(f"rows of {length} samples are longer than the preamble ({cfg.preamble_samples})")
    ideal = np.tile(upchirp(cfg), cfg.preamble_symbols)[:length]
    phase = np.angle(x.astype(np.complex128) @ ideal.conj().astype(np.complex128))  # float64: exact to ~1e-12
    turn = np.exp(1j * phase).astype(np.complex64)[:, None]
    y = iq_imbalance(x * turn.conj(), iq_gain_db=draw.iq_gain_db, iq_phase_deg=draw.iq_phase_deg)
    y = dc_offset(y, dc_offset=draw.dc_offset)
    y = tx_filter_ripple(
        y,
        ripple_db=draw.ripple_db,
        ripple_period_hz=draw.ripple_period_hz,
        ripple_phase_rad=draw.ripple_phase_rad,
        fs_hz=cfg.fs_hz,
    )
    return rms_normalize(y * turn)


def add_pseudo_devices(
    iq: npt.ArrayLike,
    labels: npt.ArrayLike,
    n_copies: int,
    cfg: LoRaConfig,
    rng: np.random.Generator,
    *,
    n_classes: int | None = None,
) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.int64]]:
    """The pseudo-devices of every device in ``labels``: ``n_copies`` copies each, one transform per copy.

    Parameters
    ----------
    iq : array_like of complex64, shape (N, L)
        CFO-compensated preambles (:func:`apply_pseudo_device`).
    labels : array_like of int, shape (N,)
        Class index of every row, ``0 .. K-1``.
    n_copies : int
        Pseudo-devices per device (0: none).
    cfg : LoRaConfig
    rng : numpy.random.Generator
        Source of the transforms: copy 1's of every class in class order, then copy 2's, ...
    n_classes : int, optional
        ``K``, the number of real classes (default: the largest label plus one).

    Returns
    -------
    iq : ndarray of complex64, shape (n_copies * N, L)
        The copies' packets, copy 1 of every device first, then copy 2, ...
    labels : ndarray of int64, shape (n_copies * N,)
        Their classes: copy ``j`` (1-based) of class ``c`` is ``j * K + c``, so the real classes keep
        ``0 .. K-1``.
    """
    x = np.atleast_2d(np.asarray(iq, dtype=np.complex64))
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if y.size != x.shape[0]:
        raise ConfigError(f"labels has {y.size} entries but iq has {x.shape[0]} rows")
    if n_copies < 0:
        raise ConfigError(f"pseudo_devices={n_copies} is not valid: use 0 or more")
    if n_classes is None:
        n_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ConfigError(f"labels must lie in 0..{n_classes - 1}")
    out_iq = np.empty((int(n_copies) * x.shape[0], x.shape[1]), dtype=np.complex64)
    out_labels = np.empty(int(n_copies) * x.shape[0], dtype=np.int64)
    for j in range(1, int(n_copies) + 1):
        base = (j - 1) * x.shape[0]
        for c, draw in zip(range(n_classes), draw_pseudo_devices(n_classes, rng), strict=True):
            rows = np.flatnonzero(y == c)
            out_iq[base + rows] = apply_pseudo_device(x[rows], draw, cfg)
            out_labels[base + rows] = j * n_classes + c
    return out_iq, out_labels
