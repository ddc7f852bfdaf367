"""Split a wideband IQ stream into narrow channels: frequency shift, low-pass filter, decimation in one step.

:class:`Channelizer` turns a complex64 stream sampled at ``fs_hz`` around ``center_freq_hz`` into one stream
per listed channel, each centred on its channel and decimated by an integer factor so that the LoRa bandwidth
is integer-oversampled. It is a fast-convolution (overlap-save) filter bank: one FFT of each input block is
shared by every channel, multiplied by each channel's band-pass response, folded to the output rate and
inverse-transformed.
Blocks sit at fixed absolute positions, so the output does not depend on how the input is chunked.
:func:`channel_to_input_index` is the one mapping from a channel's sample index back to the input stream's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.fft
from scipy.signal import firwin, kaiserord

from lorarffi.dsp.packet import Packet
from lorarffi.dsp.sample_store import SampleStore
from lorarffi.errors import ConfigError

__all__ = ["Channelizer", "channel_to_input_index", "packet_to_input", "choose_decimation", "channel_filter"]

_ATTENUATION_DB = 60.0  # stop-band attenuation of the channel filter
_FFT_OVER_TAPS = 16  # FFT length at least this many filter lengths (overlap-save efficiency)


def channel_to_input_index(index: npt.ArrayLike, decimation: int) -> npt.NDArray[np.float64] | float:
    """Position in the input stream of a channel sample index (fractional indices allowed).

    Channel output sample ``m`` is centred on input sample ``m * decimation`` (the filter is zero-phase), so
    the mapping is exact and has no delay.

    Parameters
    ----------
    index : array_like of float
        Absolute sample indices at the channel rate ``fs_hz / decimation``.
    decimation : int

    Returns
    -------
    input_index : ndarray of float64 or float
        The same instants as absolute input-stream sample indices.

    Examples
    --------
    >>> channel_to_input_index(250.5, 4)
    1002.0
    """
    out = np.asarray(index, dtype=np.float64) * int(decimation)
    return float(out) if out.ndim == 0 else out


def packet_to_input(packet: Packet, decimation: int, fs_hz: float) -> Packet:
    """A packet found on a channel with its positions moved to the input stream (indices and ``fs_hz``).

    ``start`` and ``start_frac`` keep the sub-sample estimate (``start + start_frac`` is mapped exactly);
    ``fingerprint_start`` and ``stop`` are rounded to the nearest input sample. The fingerprint window is
    untouched: it stays at ``preamble_fs_hz``.
    """
    exact = float(channel_to_input_index(packet.start + packet.start_frac, decimation))
    start = int(round(exact))
    return dataclasses.replace(
        packet,
        start=start,
        start_frac=exact - start,
        fingerprint_start=int(round(float(channel_to_input_index(packet.fingerprint_start, decimation)))),
        stop=int(round(float(channel_to_input_index(packet.stop, decimation)))),
        fs_hz=float(fs_hz),
    )


def choose_decimation(fs_hz: float, bw_hz: float, *, min_oversampling: int = 2) -> int:
    """The largest decimation leaving at least ``min_oversampling`` samples per chip, an integer number of
    them when the input allows.

    Parameters
    ----------
    fs_hz : float
        Input sample rate, Hz.
    bw_hz : float
        LoRa bandwidth, Hz.
    min_oversampling : int
        Fewest output samples per chip (2 keeps the detector's timing sub-sample and leaves room for the
        filter).

    Examples
    --------
    >>> choose_decimation(1e6, 125e3), choose_decimation(2e6, 125e3), choose_decimation(1e6, 500e3)
    (4, 8, 1)
    """
    best_any = 1
    for d in range(int(fs_hz // (min_oversampling * bw_hz)), 0, -1):
        osr = fs_hz / d / bw_hz
        if abs(osr - round(osr)) < 1e-9:
            return d
        best_any = max(best_any, d)
    return best_any


def channel_filter(fs_hz: float, decimation: int, bw_hz: float, *, spacing_hz: float = math.inf,
                   cfo_margin_hz: float = 25e3) -> npt.NDArray[np.float64]:
    """Low-pass prototype of the channel filter: odd length, symmetric (zero-phase about its centre tap).

    The pass band holds the LoRa band and a CFO margin (``bw_hz / 2 + cfo_margin_hz``); the stop band
    (60 dB down, Kaiser window) starts before the nearest neighbouring channel's band and before the band
    the decimation folds onto the pass band, and no further than one bandwidth past the pass band.

    Returns
    -------
    h : ndarray of float64, shape (n_taps,)
        Unit DC gain.
    """
    pass_hz = bw_hz / 2 + cfo_margin_hz
    stop_hz = min(fs_hz / decimation - pass_hz, spacing_hz - pass_hz, pass_hz + bw_hz)
    if not stop_hz > pass_hz:
        raise ConfigError(
            f"channels {spacing_hz:g} Hz apart at {fs_hz / decimation:g} S/s leave no room for a "
            f"{bw_hz:g} Hz LoRa channel and a {cfo_margin_hz:g} Hz CFO margin: use a larger sample rate, a "
            "smaller decimation or channels further apart"
        )
    n_taps, beta = kaiserord(_ATTENUATION_DB, (stop_hz - pass_hz) / (fs_hz / 2))
    n_taps |= 1
    return firwin(n_taps, (pass_hz + stop_hz) / 2, window=("kaiser", beta), fs=fs_hz)


class Channelizer:
    """Split a wideband stream into channels, streaming, with output identical for any chunking.

    Channel ``c``'s output sample ``m`` is the input mixed down by ``channels_hz[c] - center_freq_hz`` (phase
    zero at input sample 0), filtered by :func:`channel_filter` centred on input sample ``m * decimation``,
    and nothing else: ``y[c, m] = sum_k h[k] x[m D - k + g] exp(-2 pi i f_c (m D - k + g) / fs)`` with
    ``g = (len(h) - 1) / 2`` and ``x`` zero outside the stream.

    Parameters
    ----------
    fs_hz : float
        Input sample rate, Hz.
    center_freq_hz : float
        Frequency of the input's 0 Hz, Hz.
    channels_hz : sequence of float
        Channel centre frequencies, Hz; each within the input band with room for its bandwidth.
    bw_hz : float
        LoRa bandwidth of the channels, Hz.
    decimation : int, optional
        Input samples per output sample (default :func:`choose_decimation`: 4 at 1 MS/s and 125 kHz).
    cfo_margin_hz : float
        Carrier offset kept inside the pass band on either side of the LoRa band, Hz.
    block_samples : int
        Input samples per FFT block, rounded up to a power of two of at least 16 filter lengths. A block's
        output is returned once its last input sample has arrived, so this bounds the added latency (16384:
        16 ms at 1 MS/s); smaller blocks cost more CPU per sample.

    Attributes
    ----------
    fs_out_hz : float
        Output sample rate, ``fs_hz / decimation``.
    n_in, n_out : int
        Input samples received; output samples (per channel) returned.

    Examples
    --------
    >>> ch = Channelizer(1e6, 868.3e6, [868.1e6, 868.3e6, 868.5e6], bw_hz=125e3)
    >>> ch.decimation, ch.fs_out_hz
    (4, 250000.0)
    >>> t = np.arange(40_000)
    >>> x = np.exp(2j * np.pi * -0.2 * t).astype(np.complex64)  # a tone on 868.1 MHz
    >>> y = np.concatenate([ch.process(x[:12345]), ch.process(x[12345:]), ch.flush()], axis=1)
    >>> y.shape, np.round(np.abs(y[:, 5000]), 3).tolist()
    ((3, 10000), [1.0, 0.0, 0.0])
    """

    def __init__(
        self,
        fs_hz: float,
        center_freq_hz: float,
        channels_hz: Sequence[float],
        *,
        bw_hz: float = 125e3,
        decimation: int | None = None,
        cfo_margin_hz: float = 25e3,
        block_samples: int = 16384,
    ) -> None:
        chans = np.asarray(list(channels_hz), dtype=np.float64)
        if chans.ndim != 1 or chans.size == 0:
            raise ConfigError(f"channels_hz={list(channels_hz)!r} is not valid: give at least one frequency")
        if not fs_hz > 0 or not bw_hz > 0:
            raise ConfigError(f"fs_hz={fs_hz!r}, bw_hz={bw_hz!r}: both must be positive")
        offsets = chans - float(center_freq_hz)
        edge = np.abs(offsets) + bw_hz / 2
        if np.any(edge > fs_hz / 2):
            bad = chans[edge > fs_hz / 2][0]
            raise ConfigError(
                f"channel {bad:g} Hz does not fit in the {fs_hz:g} S/s band around {center_freq_hz:g} Hz "
                f"(its {bw_hz:g} Hz band reaches {np.max(edge):g} Hz from the centre; the band is "
                f"+-{fs_hz / 2:g})"
            )
        if np.unique(chans).size != chans.size:
            raise ConfigError(f"channels_hz={chans.tolist()!r} lists a channel twice")
        d = choose_decimation(fs_hz, bw_hz) if decimation is None else int(decimation)
        if d < 1 or fs_hz / d < bw_hz:
            raise ConfigError(f"decimation={decimation!r} is not valid: use 1 to {int(fs_hz // bw_hz)}")
        spacing = float(np.min(np.diff(np.sort(chans)))) if chans.size > 1 else math.inf
        self.fs_hz = float(fs_hz)
        self.center_freq_hz = float(center_freq_hz)
        self.channels_hz = tuple(float(c) for c in chans)
        self.bw_hz = float(bw_hz)
        self.decimation = d
        self.fs_out_hz = self.fs_hz / d
        h = channel_filter(fs_hz, d, bw_hz, spacing_hz=spacing, cfo_margin_hz=cfo_margin_hz)
        self.n_taps = h.size
        g = (h.size - 1) // 2
        # block geometry: outputs [q*hop, (q+1)*hop) / D come from inputs [q*hop - lead, q*hop - lead + n_fft)
        lead = -(-g // d) * d  # first valid circular index on the output grid
        n_fft = 1 << math.ceil(math.log2(max(_FFT_OVER_TAPS * h.size, int(block_samples), 2)))
        n_fft = -(-n_fft // d) * d
        hop = (n_fft - g - lead) // d * d
        self._n_fft, self._hop, self._lead = n_fft, hop, lead
        # each channel's band-pass response, centred on circular index 0: h[k] at index k - g, modulated to
        # +f so that filtering then mixing down at the output positions equals mixing down then filtering
        k = np.arange(h.size) - g
        omega = 2 * np.pi * offsets / fs_hz
        taps = np.zeros((chans.size, n_fft), dtype=np.complex128)
        taps[:, k % n_fft] = h[None, :] * np.exp(1j * omega[:, None] * k[None, :])
        # the 1/D of the folded inverse FFT is folded into the response
        self._response = (scipy.fft.fft(taps, axis=1) / d).astype(np.complex64)
        self._omega = omega
        # mixing down at output j of a block starting at input q*hop: exp(-i omega q hop) * exp(-i omega D j)
        j = np.arange(hop // d)
        mix = np.exp(-1j * np.mod(omega[:, None] * d * j[None, :], 2 * np.pi))
        self._mix_table = mix.astype(np.complex64)
        self._held = SampleStore()  # the input samples the next blocks read
        self.n_in = 0
        self.n_out = 0
        self._flushed = False

    @property
    def n_channels(self) -> int:
        return len(self.channels_hz)

    @property
    def latency_samples(self) -> int:
        """Input samples that can arrive before the output covering them is returned (at most)."""
        return self._n_fft

    def to_input_index(self, index: npt.ArrayLike) -> npt.NDArray[np.float64] | float:
        """:func:`channel_to_input_index` with this channelizer's decimation."""
        return channel_to_input_index(index, self.decimation)

    # -- streaming ------------------------------------------------------------------------------------------
    def _blocks(self, q0: int, n_blocks: int) -> npt.NDArray[np.complex64]:
        """Output blocks ``q0 .. q0 + n_blocks - 1``, shape (n_channels, n_blocks * hop / D).

        One block per transform, whatever ``n_blocks``: a batched FFT may round differently from a single one,
        and the output must not depend on how many blocks a call completes."""
        d, n_fft, hop, lead = self.decimation, self._n_fft, self._hop, self._lead
        first = q0 * hop - lead
        seg = self._held.get(first, first + (n_blocks - 1) * hop + n_fft)  # zeros before 0 and past the end
        m = n_fft // d
        i0 = lead // d
        out = np.empty((self.n_channels, n_blocks * hop // d), dtype=np.complex64)
        for b in range(n_blocks):
            spec = scipy.fft.fft(seg[b * hop : b * hop + n_fft])  # complex64 in, complex64 out
            y = spec[None, :] * self._response  # (C, n_fft): each channel's band, still at its frequency
            folded = y.reshape(-1, d, m).sum(axis=1) if d > 1 else y  # decimation folds the spectrum
            z = scipy.fft.ifft(folded, axis=1)  # index i holds input position first + b * hop + i * D
            # mix down: output j of this block sits at input position (q0 + b) * hop + j * D
            start = np.exp(-1j * np.mod(self._omega * float((q0 + b) * hop), 2 * np.pi)).astype(np.complex64)
            np.multiply(z[:, i0 : i0 + hop // d], self._mix_table * start[:, None],
                        out=out[:, b * (hop // d) : (b + 1) * (hop // d)])
        return out

    def process(self, x: npt.ArrayLike) -> npt.NDArray[np.complex64]:
        """Feed input samples; returns the channel samples that became complete.

        Parameters
        ----------
        x : array_like of complex, shape (n,)
            The next ``n`` input samples at ``fs_hz`` (any ``n``). Not modified.

        Returns
        -------
        y : ndarray of complex64, shape (n_channels, k)
            Channel samples ``n_out .. n_out + k - 1`` (before this call), at ``fs_out_hz``; ``k`` is a
            multiple of the block length and may be 0.
        """
        if self._flushed:
            raise RuntimeError("Channelizer.process() after flush()")
        x = np.asarray(x)
        if x.ndim != 1:
            raise ConfigError(f"expected a 1-D array of complex samples, got shape {x.shape}")
        if x.size:
            self._held.append(np.array(x, dtype=np.complex64, copy=True), owned=True)
            self.n_in += x.size
        hop, lead, n_fft = self._hop, self._lead, self._n_fft
        q0 = self.n_out * self.decimation // hop
        # block q is complete when its last input sample, q*hop - lead + n_fft - 1, has arrived
        n_blocks = max(0, (self.n_in + lead - n_fft) // hop + 1 - q0)
        if n_blocks == 0:
            return np.zeros((self.n_channels, 0), dtype=np.complex64)
        out = self._blocks(q0, n_blocks)
        self.n_out += out.shape[1]
        self._held.trim((q0 + n_blocks) * hop - lead)
        return out

    def flush(self) -> npt.NDArray[np.complex64]:
        """The remaining channel samples, ``ceil(n_in / decimation)`` in all (zero input past its end)."""
        if self._flushed:
            return np.zeros((self.n_channels, 0), dtype=np.complex64)
        self._flushed = True
        total = -(-self.n_in // self.decimation)
        if self.n_out >= total:
            return np.zeros((self.n_channels, 0), dtype=np.complex64)
        q0 = self.n_out * self.decimation // self._hop
        n_blocks = -(-(total * self.decimation - q0 * self._hop) // self._hop)
        out = self._blocks(q0, n_blocks)[:, : total - self.n_out]
        self.n_out = total
        return out
