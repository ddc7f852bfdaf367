"""Log-magnitude spectrograms of LoRa packets, batched: the INFOCOM STFT and the TIFS channel-independent one.

Both transforms cut each packet into rectangular (boxcar) frames of ``n_fft`` samples every ``hop`` samples,
exactly as ``scipy.signal.stft(x, window="boxcar", nperseg=n_fft, noverlap=n_fft - hop, nfft=n_fft,
return_onesided=False, boundary=None, padded=False)`` does, so a packet of ``L`` samples gives
``M = (L - n_fft) // hop + 1`` frames and no frame is padded. The spectrum is two-sided and ``fftshift``-ed:
row ``r`` holds the frequency ``(r - n_fft // 2) * fs / n_fft``, from ``-fs/2`` upwards. A ``crop=(lo, hi)``
keeps rows ``round(n_fft * lo)`` to ``round(n_fft * hi) - 1`` (Python's ``round``, as the authors' code):
``(0.3, 0.7)`` keeps rows 77..178 of 256, i.e. -199.2 kHz to +195.3 kHz at 1 MS/s (Shen et al., TIFS 2022,
code ``ChannelIndSpectrogram``; paper_notes §5).

* :func:`spectrogram` is ``log10(|S|^2)`` of the STFT ``S`` (scipy's scaling, ``1 / n_fft``) of the per-packet
  RMS-normalised packet (Shen et al., INFOCOM 2021, §IV-C, eq. 17): shape ``(N, n_fft, M)`` uncropped.
* :func:`channel_independent_spectrogram` is ``log10(|S[:, m+1] / S[:, m]|^2)``, the ratio of adjacent columns
  (TIFS 2022, eqs. 7-8), cropped to 30-70 % of the rows: shape ``(N, 102, 62)`` for 8192-sample packets.
  The factor 10 of the paper's dB is left out, as in the authors' code the models are trained on.

Guard against exact zeros (the authors' code has none and gives inf/NaN on them): before the logarithm
every magnitude is raised to at least ``top_db`` dB (default 120) below the packet's strongest bin among the
kept rows, as ``librosa.power_to_db(top_db=...)`` does. The floor scales with the packet, so multiplying a
packet by any non-zero complex constant leaves both outputs unchanged; a bin that is exactly zero (a frame
inside a run of zeros, the other bins of an exact-bin tone) yields the floor, never ``-inf``, and the ratio of
two floored bins is exactly 0, never NaN. An all-zero packet (or one with no energy at all in the kept rows)
gives the constant spectrogram ``-top_db / 10`` and an all-zero channel-independent spectrogram. 120 dB is
more than any capture's dynamic range, so the floor leaves real or noisy packets on the authors' recipe;
float32 rounding of the FFT (about 140 dB below the peak) lies under it, so bins that are zero in exact
arithmetic give zero ratios here too. Non-finite samples are not repaired: a packet that holds one gets
a non-finite output.

Implementation: both functions accept numpy arrays and torch tensors (CPU or CUDA; torch is imported only
when a tensor is given) and return the same kind on the same device. The numpy path computes the FFT of
strided frame views with ``scipy.fft`` (complex64 throughout) in cache-sized blocks of packets, dealt in
turn to ``workers`` threads that each run the FFT and all the post-processing of their blocks (scipy.fft
and numpy's ufuncs release the GIL), takes the magnitude of the cropped bins only (the fftshift is folded
into the bin selection), and uses two identities: the RMS normalisation and scipy's ``1 / n_fft`` scale
cancel in the column ratio, and ``log10|a/b|^2 = 2 (log10|a| - log10|b|)``, so each cropped bin needs one
logarithm, not one per ratio; the differences are taken over each block as one flat array and copied into
the output once.
The torch path does the same with ``torch.fft`` (MKL on x86 CPUs) on blocks of unfolded frames, the power of
the cropped bins as ``S * conj(S)`` into a reused buffer, the floor applied in the log domain, and the column
difference written straight into the (frequency, time) output.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.fft

from lorarffi.errors import ConfigError

__all__ = ["spectrogram", "channel_independent_spectrogram", "stft_frame_count", "crop_rows"]

# FFT bins per block of packets: 2 MiB of complex64 spectra (16 packets of 63 x 256), so a block's FFT,
# magnitudes and logs stay in cache (measured: 8 to 32 packets a block are about equally fast, 2,000 slower).
_BLOCK_BINS = 1 << 18
_TINY = float(np.finfo(np.float32).tiny)
_LOG10_TINY = 2.0 * math.log10(_TINY)          # the power floor's floor, log10(tiny^2) (amplitude floor tiny)
# The torch path's blocks: 4 MiB of complex64 spectra (32 packets of 63 x 256). Measured on 2,000 packets with
# 1 and 2 threads: 16 and 32 packets a block equally fast, 64 slower by 1.2-1.7x.
_TORCH_BLOCK_BINS = 1 << 19


def stft_frame_count(n_samples: int, *, n_fft: int = 256, hop: int = 128) -> int:
    """Number of whole ``n_fft``-sample frames, ``hop`` apart, in ``n_samples`` samples (no padding).

    Examples
    --------
    >>> stft_frame_count(8192)
    63
    """
    _check_stft_params(n_fft, hop)
    if n_samples < n_fft:
        return 0
    return (int(n_samples) - n_fft) // hop + 1


def crop_rows(n_fft: int, crop: tuple[float, float] | None) -> tuple[int, int]:
    """First and one-past-last row of the ``fftshift``-ed spectrum kept by ``crop`` (``None`` keeps all).

    Examples
    --------
    >>> crop_rows(256, (0.3, 0.7))
    (77, 179)
    >>> crop_rows(256, None)
    (0, 256)
    """
    if crop is None:
        return 0, int(n_fft)
    try:
        lo, hi = (float(c) for c in crop)
    except (TypeError, ValueError):
        raise ConfigError(f"crop={crop!r} is not valid: give (lo, hi) row fractions, or None") from None
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"crop={crop!r} is not valid: need 0 <= lo < hi <= 1")
    first, stop = round(n_fft * lo), round(n_fft * hi)
    if stop <= first:
        raise ConfigError(f"crop={crop!r} keeps no row of n_fft={n_fft} bins: widen it")
    return first, stop


def spectrogram(
    iq: Any,
    *,
    n_fft: int = 256,
    hop: int = 128,
    crop: tuple[float, float] | None = None,
    top_db: float = 120.0,
    workers: int | None = None,
) -> Any:
    """Log-power STFT of RMS-normalised packets (the INFOCOM 2021 spectrogram), batched.

    ``log10(|S|^2)`` where ``S`` is the two-sided, ``fftshift``-ed boxcar STFT of ``x / rms(x)`` with scipy's
    scaling (``1 / n_fft``), so each frame of a unit-RMS packet has unit total power. Equal to
    ``log10(|fftshift(scipy.signal.stft(x / rms(x), window="boxcar", nperseg=n_fft, noverlap=n_fft - hop,
    return_onesided=False, boundary=None, padded=False)[2], axes=0)|**2)`` where no bin is below the floor.

    Parameters
    ----------
    iq : ndarray or torch.Tensor, complex64, shape (N, L) or (L,)
        Packets (e.g. aligned, CFO-compensated preambles), any complex scale. Other numeric dtypes are
        converted to complex64.
    n_fft : int
        Frame (window) length and FFT size in samples; rows of the uncropped output.
    hop : int
        Samples between frame starts (the authors: 128, half a frame).
    crop : (float, float) or None
        Fractions ``(lo, hi)`` of the shifted rows to keep (see :func:`crop_rows`); ``(0.3, 0.7)`` gives the
        TIFS crop. ``None`` keeps all ``n_fft`` rows.
    top_db : float
        Dynamic range kept, in dB: magnitudes are floored at ``top_db`` below the packet's strongest kept bin
        (see the module docstring).
    workers : int, optional
        Threads, as ``scipy.fft`` counts them (numpy input only; ``None`` is one, the calling thread; -1 all
        cores). Each thread transforms whole cache-sized blocks of packets (16 packets of 8192 samples), so a
        batch of one block runs on one thread. Torch input uses torch's intra-op threads.

    Returns
    -------
    spec : ndarray or torch.Tensor of float32, shape (N, F, M) or (F, M)
        ``log10`` of power, rows from lowest to highest frequency (``F = n_fft`` uncropped), columns the
        ``M = (L - n_fft) // hop + 1`` frames in time order. Same kind and device as ``iq``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = (rng.standard_normal((3, 8192)) + 1j * rng.standard_normal((3, 8192))).astype(np.complex64)
    >>> spectrogram(x).shape, spectrogram(x, crop=(0.3, 0.7)).shape, spectrogram(x[0]).dtype
    ((3, 256, 63), (3, 102, 63), dtype('float32'))
    """
    return _transform(iq, n_fft, hop, crop, top_db, workers, ratio=False)


def channel_independent_spectrogram(
    iq: Any,
    *,
    n_fft: int = 256,
    hop: int = 128,
    crop: tuple[float, float] | None = (0.3, 0.7),
    top_db: float = 120.0,
    workers: int | None = None,
) -> Any:
    """Channel-independent spectrogram (Shen et al., TIFS 2022, eqs. 7-8; the authors' code), batched.

    ``log10(|S[:, m+1] / S[:, m]|^2)`` for adjacent boxcar STFT columns ``m`` of the RMS-normalised packet,
    two-sided and ``fftshift``-ed, rows cropped to ``crop``. A channel that is constant over two adjacent
    frames (``hop / fs`` apart: 128 us at 1 MS/s) multiplies both columns by the same response and cancels.
    Matches the authors' per-packet ``ChannelIndSpectrogram`` recipe (paper_notes §5) to float32 rounding,
    except that squared magnitudes are floored (see the module docstring) so exact zeros give finite values.

    Parameters
    ----------
    iq : ndarray or torch.Tensor, complex64, shape (N, L) or (L,)
        Packets of at least ``n_fft + hop`` samples, any complex scale (8192-sample preambles at SF7,
        125 kHz, 1 MS/s in the paper).
    n_fft : int
        Frame (window) length and FFT size in samples.
    hop : int
        Samples between frame starts.
    crop : (float, float) or None
        Fractions ``(lo, hi)`` of the shifted rows to keep (see :func:`crop_rows`); ``None`` keeps all.
    top_db : float
        Dynamic range kept, in dB: magnitudes are floored at ``top_db`` below the packet's strongest kept bin
        (see the module docstring).
    workers : int, optional
        Threads, as ``scipy.fft`` counts them (numpy input only; ``None`` is one, the calling thread; -1 all
        cores). Each thread transforms whole cache-sized blocks of packets (16 packets of 8192 samples), so a
        batch of one block runs on one thread.

    Returns
    -------
    spec : ndarray or torch.Tensor of float32, shape (N, F, M - 1) or (F, M - 1)
        ``log10`` of the power ratio of adjacent columns; ``F`` cropped rows from lowest to highest
        frequency, ``M = (L - n_fft) // hop + 1`` frames. ``(N, 102, 62)`` for ``L = 8192`` at the defaults.
        Same kind and device as ``iq``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = (rng.standard_normal((2, 8192)) + 1j * rng.standard_normal((2, 8192))).astype(np.complex64)
    >>> out = channel_independent_spectrogram(x)
    >>> out.shape, out.dtype
    ((2, 102, 62), dtype('float32'))
    >>> bool(np.allclose(channel_independent_spectrogram((0.5 - 2j) * x), out, atol=1e-4))
    True
    """
    return _transform(iq, n_fft, hop, crop, top_db, workers, ratio=True)


def _check_stft_params(n_fft: int, hop: int) -> None:
    for name, value in (("n_fft", n_fft), ("hop", hop)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name}={value!r} is not valid: use a positive integer number of samples")


def _is_tensor(obj: object) -> bool:
    """True for a torch tensor, without importing torch (a tensor implies torch is already imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _as_packets(iq: Any) -> tuple[Any, bool]:
    """``iq`` as an ``(N, L)`` complex64 array or tensor (not copied if already so) and whether it was 1-D."""
    if _is_tensor(iq):
        import torch

        if iq.ndim not in (1, 2):
            raise ConfigError(f"iq has shape {tuple(iq.shape)}: expected packets (N, L) or one packet (L,)")
        if iq.dtype == torch.bool or not (iq.dtype.is_floating_point or iq.dtype.is_complex
                                          or iq.dtype in _torch_int_dtypes(torch)):
            raise ConfigError(f"iq has dtype {iq.dtype}: expected complex64 IQ samples")
        x = iq.to(torch.complex64)
    else:
        x = np.asarray(iq)
        if x.ndim not in (1, 2):
            raise ConfigError(f"iq has shape {x.shape}: expected packets (N, L) or one packet (L,)")
        if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
            raise ConfigError(f"iq has dtype {x.dtype}: expected complex64 IQ samples")
        x = np.ascontiguousarray(x, dtype=np.complex64)
    squeeze = x.ndim == 1
    return (x[None] if squeeze else x), squeeze


def _torch_int_dtypes(torch: Any) -> tuple[Any, ...]:
    return (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _bin_runs(n_fft: int, first: int, stop: int) -> list[tuple[int, int]]:
    """Contiguous runs ``(start, stop)`` of unshifted FFT bins making shifted rows ``first .. stop - 1``."""
    start = (first - n_fft // 2) % n_fft
    n_rows = stop - first
    head = min(n_rows, n_fft - start)
    runs = [(start, start + head)]
    if head < n_rows:
        runs.append((0, n_rows - head))
    return runs


def _transform(iq: Any, n_fft: int, hop: int, crop: Any, top_db: float, workers: int | None,
               *, ratio: bool) -> Any:
    _check_stft_params(n_fft, hop)
    if (isinstance(top_db, bool) or not isinstance(top_db, (int, float, np.integer, np.floating))
            or not 0 < top_db < math.inf):
        raise ConfigError(f"top_db={top_db!r} is not valid: use a finite positive number of dB")
    n_threads = _thread_count(workers)
    first, stop = crop_rows(n_fft, crop)
    x, squeeze = _as_packets(iq)
    n_samples = int(x.shape[-1])
    n_frames = stft_frame_count(n_samples, n_fft=n_fft, hop=hop)
    need = n_fft + hop if ratio else n_fft
    if n_frames < (2 if ratio else 1):
        raise ConfigError(f"iq has {n_samples} samples per packet: need at least {need} "
                          f"(n_fft={n_fft}, hop={hop}) for {'two frames' if ratio else 'one frame'}")
    floor_rel = 10.0 ** (-top_db / 20.0)                                  # amplitude floor / peak amplitude
    runs = _bin_runs(n_fft, first, stop)
    args = (x, n_fft, hop, n_frames, runs, floor_rel, ratio)
    out = _transform_torch(*args) if _is_tensor(x) else _transform_numpy(*args, n_threads=n_threads)
    return out[0] if squeeze else out


def _thread_count(workers: int | None) -> int:
    """Threads for ``workers`` as ``scipy.fft`` reads it: None is 1, -1 every core, -2 all but one."""
    if workers is None:
        return 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers == 0:
        raise ConfigError(f"workers={workers!r} is not valid: use a positive thread count, -1 for all cores, "
                          "or None")
    n = int(workers) if workers > 0 else (os.cpu_count() or 1) + 1 + int(workers)
    if n < 1:
        raise ConfigError(f"workers={workers!r} is not valid: this machine has {os.cpu_count()} cores, "
                          f"so negative values go down to -{os.cpu_count()}")
    return n


def _packets_per_block(n_packets: int, n_frames: int, n_fft: int) -> int:
    """Packets in one cache-sized block of the numpy path (``_BLOCK_BINS`` FFT bins), at most all of them."""
    return min(max(1, _BLOCK_BINS // (n_frames * n_fft)), n_packets)


def _run_in_threads(work: Callable[[int], None], n_threads: int) -> None:
    """``work(t)`` for ``t`` in ``range(n_threads)``, each on its own thread (inline for one); joins them all
    and re-raises the first error."""
    if n_threads == 1:
        work(0)
        return
    with ThreadPoolExecutor(n_threads, thread_name_prefix="lorarffi-spectrogram") as pool:
        for done in [pool.submit(work, t) for t in range(n_threads)]:
            done.result()


def _transform_numpy(x: npt.NDArray[np.complex64], n_fft: int, hop: int, n_frames: int,
                     runs: list[tuple[int, int]], floor_rel: float, ratio: bool, *,
                     n_threads: int) -> npt.NDArray[np.float32]:
    n_packets, n_samples = x.shape
    n_rows = sum(b - a for a, b in runs)
    out = np.empty((n_packets, n_rows, n_frames - 1 if ratio else n_frames), dtype=np.float32)
    step = x.strides[1]
    # (N, n_fft, M) view: sample n of frame m of packet k is x[k, m * hop + n]. Transforming along axis 1
    # gives the spectrum rows on axis 1 directly, the output's (frequency, time) layout: no transpose copy.
    frames = np.lib.stride_tricks.as_strided(
        x, (n_packets, n_fft, n_frames), (x.strides[0], step, hop * step), writeable=False)
    samples = x.view(np.float32)[:, None, :]                             # (N, 1, 2L): re, im interleaved
    block = _packets_per_block(n_packets, n_frames, n_fft)
    starts = range(0, n_packets, block)
    n_threads = min(n_threads, len(starts))

    def run_blocks(first_block: int) -> None:
        # Every thread takes every n_threads-th block, FFT and post-processing together: numpy's ufuncs and
        # scipy.fft release the GIL, so the magnitudes, logs and differences run on all the threads as well
        # as the FFT (one multi-threaded FFT per block left them on one core: 1.4x slower on 2 cores).
        amp = np.empty((block, n_rows, n_frames), dtype=np.float32)
        # Column differences are taken over the flat block (one contiguous pass, the last column of each row
        # differenced against the next row's first and then dropped), then copied into the output. A direct
        # (F, M) -> (F, M - 1) difference iterates over 62-sample rows and measured 3x slower.
        diff = np.empty(amp.size if ratio else 0, dtype=np.float32)
        for i in starts[first_block::n_threads]:
            j = min(i + block, n_packets)
            spec = scipy.fft.fft(frames[i:j], axis=1, workers=1)         # (b, n_fft, M) complex64
            a_blk = amp[: j - i]
            row = 0
            for a, b in runs:                                            # fftshift + crop, magnitudes only
                np.abs(spec[:, a:b], out=a_blk[:, row:row + b - a])
                row += b - a
            # Floor at top_db below each packet's strongest kept bin. Fast path: when the block's weakest bin
            # is within top_db of its strongest (and not below tiny), no packet's bin is under its own floor.
            # A NaN or inf anywhere in the block fails the test (NaN compares false), so the other packets
            # get theirs.
            lowest, highest = float(a_blk.min()), float(a_blk.max())
            if not (lowest >= _TINY and lowest >= highest * floor_rel):  # rare: per-packet floors
                flat = a_blk.reshape(j - i, -1)
                peak = flat.max(axis=1)                                  # strongest kept |FFT| per packet
                peak[peak == 0] = n_fft                                  # all-zero packet: as if peak at 0 dB
                floor = np.maximum(peak * floor_rel, _TINY)
                np.maximum(a_blk, floor[:, None, None], out=a_blk)
            np.log10(a_blk, out=a_blk)                                   # log10 |FFT|, (b, F, M)
            o_blk = out[i:j]
            if ratio:                                                    # 2 (log10 |S_{m+1}| - log10 |S_m|)
                flat_log, flat_diff = a_blk.reshape(-1), diff[: a_blk.size]
                np.subtract(flat_log[1:], flat_log[:-1], out=flat_diff[:-1])
                flat_diff[:-1] *= 2.0
                np.copyto(o_blk, flat_diff.reshape(a_blk.shape)[..., :-1])
            else:                                                        # 2 log10 |FFT| - log10(P n_fft^2)
                power = np.matmul(samples[i:j], samples[i:j].transpose(0, 2, 1))[:, 0, 0] / n_samples
                power[power == 0] = 1.0                                  # all-zero packet is left unscaled
                np.multiply(a_blk, 2.0, out=o_blk)
                o_blk -= np.log10(power.astype(np.float64) * n_fft**2).astype(np.float32)[:, None, None]

    # Loops over cache-sized blocks of packets (each block fully vectorised), not over packets.
    _run_in_threads(run_blocks, n_threads)
    return out


def _transform_torch(x: Any, n_fft: int, hop: int, n_frames: int, runs: list[tuple[int, int]],
                     floor_rel: float, ratio: bool) -> Any:
    import torch

    n_packets = x.shape[0]
    n_rows = sum(b - a for a, b in runs)
    out = torch.empty((n_packets, n_rows, n_frames - 1 if ratio else n_frames), dtype=torch.float32,
                      device=x.device)
    if n_packets == 0:                                                   # MKL refuses an empty FFT batch
        return out
    if not ratio:                                                        # log10(mean|x|^2 * n_fft^2)
        power = torch.view_as_real(x).square().sum(dim=(-1, -2), dtype=torch.float64) / x.shape[-1]
        power = torch.where(power == 0, torch.ones_like(power), power)
        offset = torch.log10(power * float(n_fft) ** 2).to(torch.float32)[:, None, None]
    frames = x.unfold(-1, n_fft, hop)                                    # (N, M, n_fft) view
    # The floor in the log domain: top_db below the packet's strongest kept bin, never below log10(tiny^2).
    floor_log_rel = 2.0 * math.log10(floor_rel)
    no_peak_log = 2.0 * math.log10(n_fft)                                # all-zero packet: as if peak at 0 dB
    # On CPU, cache-sized blocks of packets; an accelerator takes the batch at once. The power and log buffers
    # are reused from block to block (a fresh multi-MB tensor per block is page-faulted in anew each time).
    block = max(1, _TORCH_BLOCK_BINS // (n_frames * n_fft)) if x.device.type == "cpu" else n_packets
    block = min(block, n_packets)
    power = torch.empty((block, n_frames, n_rows), dtype=torch.complex64, device=x.device)
    log_pow = torch.empty((block, n_frames, n_rows), dtype=torch.float32, device=x.device)
    for i in range(0, n_packets, block):
        j = min(i + block, n_packets)
        spec = torch.fft.fft(frames[i:j], dim=-1)                        # (b, M, n_fft) complex64
        p, lg = power[: j - i], log_pow[: j - i]
        row = 0
        for a, b in runs:                                                # fftshift + crop: |S|^2 = S conj(S)
            kept = spec[..., a:b]
            torch.mul(kept, kept.conj(), out=p[..., row:row + b - a])
            row += b - a
        del spec
        torch.log10(p.real, out=lg)                                      # log10 |S|^2, (b, M, F); -inf at 0
        peak = lg.flatten(1).amax(dim=1)
        peak = torch.where(torch.isneginf(peak), torch.full_like(peak, no_peak_log), peak)
        floor = (peak + floor_log_rel).clamp_min(_LOG10_TINY)
        if bool((lg.flatten(1).amin(dim=1) < floor).any()):             # rare: skip the pass when not needed
            torch.maximum(lg, floor[:, None, None], out=lg)
        dst = out[i:j].transpose(1, 2)                                   # (b, M', F) view of the output
        if ratio:                                                        # log10 |S_{m+1}|^2 - log10 |S_m|^2
            torch.sub(lg[:, 1:], lg[:, :-1], out=dst)
        else:
            torch.sub(lg, offset[i:j], out=dst)
    return out
