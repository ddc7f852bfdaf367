"""One transmitter symbol estimated from a whole packet: preamble up-chirps, sync word, header and payload.

The preamble's coherent average (:mod:`lorarffi.dsp.coherent`) divides the noise's power by its 8 up-chirps.
Every later up-chirp of the packet (the two sync-word symbols, the header and the payload; not the 2.25
down-chirps) is the same chirp started at another frequency: symbol ``s`` is the base up-chirp cyclically
shifted by ``s * os`` samples (``os = fs / bw``) and turned by the start phase
``c_s = -pi (s^2 / 2^SF - s)`` (:func:`symbol_start_phase_rad`), so shifting it back gives the base chirp.

What the transmitter adds to the chirp does not all turn with it. Its IQ gain/phase imbalance adds the image
``b conj(x)`` and its carrier leakage a constant ``d``; once a shifted-back symbol is turned back by its own
phase, the chirp's part is the same in every symbol but the image is turned by ``exp(-2j c_s)`` and the
leakage by ``exp(-j c_s)``. A plain average of such symbols smears both (in the simulated fleets it lost
more accuracy than the extra symbols gave). Each packet's symbols are instead fitted, sample by sample and
by least squares, as ``M + exp(-2j c_s) I + exp(-j c_s) D`` with three unknown waveforms (chirp part, image
part, leakage part), and the estimate is ``M + I + D``: the symbol as a preamble up-chirp carries it (``c =
0``). Symbols whose ``c_s`` is a multiple of ``2 pi`` (``s`` a multiple of ``2^SF / 8``) count as a preamble
up-chirp; the others as about a third of one. A packet whose extra symbols are too few or too alike for the
fit keeps its preamble average.

A symbol joins when its dechirped spectrum has one dominant peak (a symbol of the packet, not noise after its
end) and its power is within a factor of two of the preamble's (not a collision with a stronger packet);
payload symbols are taken in order up to the first that fails. A row whose sync word does not read as
``cfg.sync_word`` keeps its preamble average.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.chirp import downchirp, packet_layout, sync_word_symbols
from lorarffi.dsp.coherent import coherent_symbol_average
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError

__all__ = ["PacketSymbol", "packet_symbol_estimate", "symbol_start_phase_rad", "packet_tail_samples"]

PEAK_DOMINANCE_MIN = 16.0  # dechirped peak (two folded bins) over the mean folded bin: noise alone reaches ~5
POWER_RATIO_MAX = 2.0  # a symbol's power against the preamble's mean symbol power, either way
REFINEMENTS = 2  # passes that re-estimate each symbol's phase against the fitted model of it
_ROWS_PER_BLOCK = 64  # packets processed at once: bounds the (rows, symbols, samples) temporaries


@dataclass(frozen=True)
class PacketSymbol:
    """The estimated transmitter symbol of each packet.

    Attributes
    ----------
    symbol : ndarray of complex64, shape (N, cfg.samples_per_symbol)
        The up-chirp as the preamble carries it, on about the first preamble symbol's phase.
    n_symbols : ndarray of int64, shape (N,)
        Symbols of the packet used (the preamble's included).
    effective_symbols : ndarray of float64, shape (N,)
        The noise's power in the estimate is a single symbol's divided by this (``cfg.preamble_symbols`` for
        the preamble's average alone).
    """

    symbol: npt.NDArray[np.complex64]
    n_symbols: npt.NDArray[np.int64]
    effective_symbols: npt.NDArray[np.float64]


def symbol_start_phase_rad(values: npt.ArrayLike, n_chips: int) -> npt.NDArray[np.float64]:
    """Phase of up-chirp symbol ``s`` against the base up-chirp shifted by ``s`` chips: ``-pi (s^2/n - s)``.

    Parameters
    ----------
    values : array_like of int
        Symbol values, 0 .. n_chips - 1.
    n_chips : int
        ``2^SF``.

    Returns
    -------
    ndarray of float64, same shape, in [0, 2 pi)

    Examples
    --------
    >>> symbol_start_phase_rad([0, 16, 8], 128).round(4).tolist()
    [0.0, 0.0, 4.7124]
    """
    s = np.asarray(values, dtype=np.float64)
    return np.mod(-np.pi * (s * s / float(n_chips) - s), 2 * np.pi)


def packet_tail_samples(cfg: LoRaConfig, n_payload_symbols: int) -> int:
    """Samples from the end of the preamble's up-chirps to the end of ``n_payload_symbols`` header/payload
    symbols: the sync word, the SFD and those symbols (:func:`~lorarffi.dsp.chirp.packet_layout`)."""
    layout = packet_layout(cfg, int(n_payload_symbols))
    return int(round(layout.stop - layout.sync_start))


def _check_cfg(cfg: LoRaConfig) -> int:
    if not cfg.is_integer_oversampling:
        raise ConfigError(
            f"a packet-wide symbol estimate needs an integer oversampling (fs/bw); fs {cfg.fs_hz:g} Hz "
            f"and bw {cfg.bw_hz:g} Hz give {cfg.oversampling:g}"
        )
    return int(round(cfg.oversampling))


def _dechirp_values(sym: npt.NDArray[np.complex64], down: npt.NDArray[np.complex64],
                    n_chips: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Symbol value and peak check of each (rows, K, sps) symbol: dechirped FFT, bins s and s - n folded."""
    spec = np.fft.fft(sym * down, axis=-1)
    power = spec.real**2 + spec.imag**2
    folded = power[..., :n_chips] + power[..., power.shape[-1] - n_chips :]
    value = folded.argmax(-1)
    peak = np.take_along_axis(folded, value[..., None], -1)[..., 0]
    dominant = peak >= PEAK_DOMINANCE_MIN * folded.mean(-1)
    return value.astype(np.int64), dominant


def packet_symbol_estimate(iq: npt.ArrayLike, cfg: LoRaConfig) -> PacketSymbol:
    """The transmitter's up-chirp estimated from each packet's preamble, sync word, header and payload.

    Parameters
    ----------
    iq : array_like of complex, shape (N, L) or (L,)
        CFO-compensated packets starting at the first of the ``cfg.preamble_symbols`` up-chirps; ``L >=
        cfg.preamble_samples``. Samples past the preamble hold the sync word, the SFD and as much of the
        header and payload as was kept (:func:`packet_tail_samples`); a preamble alone gives its average.
    cfg : LoRaConfig
        Integer oversampling (``fs / bw``).

    Returns
    -------
    PacketSymbol
        1-D input gives 1-D ``symbol`` and 0-d counts.
    """
    os_ = _check_cfg(cfg)
    x = np.atleast_2d(np.asarray(iq, dtype=np.complex64))
    one = np.ndim(iq) == 1
    sps = cfg.samples_per_symbol
    if x.ndim != 2 or x.shape[1] < cfg.preamble_samples:
        raise ConfigError(
            f"packets have shape {np.shape(iq)}, expected (N, L) with L >= {cfg.preamble_samples}"
        )
    out = np.empty((x.shape[0], sps), np.complex64)
    n_used = np.empty(x.shape[0], np.int64)
    k_eff = np.empty(x.shape[0], np.float64)
    for b0 in range(0, x.shape[0], _ROWS_PER_BLOCK):
        block = slice(b0, b0 + _ROWS_PER_BLOCK)
        out[block], n_used[block], k_eff[block] = _estimate_block(x[block], cfg, os_)
    if one:
        return PacketSymbol(out[0], n_used[0], k_eff[0])
    return PacketSymbol(out, n_used, k_eff)


def _estimate_block(
    x: npt.NDArray[np.complex64], cfg: LoRaConfig, os_: int
) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    sps, n_pre, n_chips = cfg.samples_per_symbol, cfg.preamble_symbols, cfg.n_chips
    rows, length = x.shape
    pre = x[:, : n_pre * sps].reshape(rows, n_pre, sps)
    avg = coherent_symbol_average(x[:, : n_pre * sps], sps)
    if length < (n_pre + 2) * sps:
        return avg, np.full(rows, n_pre), np.full(rows, float(n_pre))
    layout = packet_layout(cfg)
    sync0, pay0 = int(round(layout.sync_start)), int(round(layout.payload_start))
    n_pay = max(0, (length - pay0) // sps)
    extra = np.concatenate(
        [x[:, sync0 : sync0 + 2 * sps].reshape(rows, 2, sps),
         x[:, pay0 : pay0 + n_pay * sps].reshape(rows, n_pay, sps)], axis=1)
    value, dominant = _dechirp_values(extra, downchirp(cfg), n_chips)
    pre_power = np.mean(pre.real**2 + pre.imag**2, axis=(1, 2))
    power = np.mean(extra.real**2 + extra.imag**2, axis=-1) / pre_power[:, None]
    ok = dominant & (power <= POWER_RATIO_MAX) & (power >= 1.0 / POWER_RATIO_MAX)
    sync = np.asarray(sync_word_symbols(cfg.sync_word))
    sync_ok = ok[:, 0] & ok[:, 1] & np.all(value[:, :2] == sync, axis=1)
    ok[:, 2:] = np.cumprod(ok[:, 2:], axis=1).astype(bool)  # payload in order up to the first that fails
    ok &= sync_ok[:, None]
    # Shift each symbol back onto the base chirp: rolled[i] = symbol[(i - s os) mod sps].
    index = (np.arange(sps)[None, None, :] - (value * os_)[:, :, None]) % sps
    rolled = np.take_along_axis(extra, index, axis=-1)
    symbols = np.concatenate([pre, rolled], axis=1)
    used = np.concatenate([np.ones((rows, n_pre), bool), ok], axis=1)
    c = np.concatenate([np.zeros((rows, n_pre)), symbol_start_phase_rad(value, n_chips)], axis=1)
    design = np.stack([np.ones_like(c), np.exp(-2j * c), np.exp(-1j * c)], axis=-1) * used[:, :, None]
    gram = np.einsum("nkp,nkq->npq", design.conj(), design)
    solve = np.einsum("npq,nkq->npk", np.linalg.pinv(gram, rcond=1e-6, hermitian=True), design.conj())
    model = avg[:, None, :]  # what each symbol should look like once turned: first the preamble's average
    for _ in range(1 + REFINEMENTS):
        turn = np.einsum("nks,nks->nk", symbols, np.conj(model))
        turn = turn / np.maximum(np.abs(turn), np.finfo(np.float32).tiny)
        parts = np.einsum("npk,nks->nps", solve, symbols * np.conj(turn)[:, :, None])  # M, I, D
        model = np.einsum("nkp,nps->nks", design, parts)
    weights = solve.sum(1)
    estimate = parts.sum(1).astype(np.complex64)
    noise_gain = np.sum(np.abs(weights) ** 2, axis=1)
    fitted = noise_gain < (1.0 - 1e-9) / n_pre  # the fit beats the preamble's average
    estimate = np.where(fitted[:, None], estimate, avg)
    n_used = np.where(fitted, used.sum(1), n_pre)
    k_eff = np.where(fitted, 1.0 / noise_gain, float(n_pre))
    return estimate, n_used.astype(np.int64), k_eff
