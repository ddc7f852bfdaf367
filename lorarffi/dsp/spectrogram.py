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
float32 rounding of the FFT is typically 140 dB or more below the peak, under the floor, so bins that are
zero in exact arithmetic give zero ratios here too (typically: the worst-case rounding of a 256-point float32
FFT is about 108 dB below the frame's energy). Non-finite samples are not repaired: a packet that holds one
gets a non-finite output.

Implementation: one path for every input. A torch tensor is viewed as a numpy array (no copy on the CPU; a
tensor on another device is copied to the host) and the result handed back as a tensor on the caller's
device. Each packet's frames are a strided view (no copy); cache-sized blocks of packets are dealt in turn to
``workers`` threads, each running the FFT and all the post-processing of its blocks (both FFT libraries and
numpy's ufuncs release the GIL). The FFT is the only step with a choice: ``scipy.fft`` (pocketfft) or
``torch.fft`` (MKL in x86 builds) on a zero-copy tensor view of the same block. ``fft_backend="auto"`` takes
whichever computes a test block fastest on this machine: it is measured once per process and FFT size, and
cached (:func:`fastest_fft_backend`, :func:`clear_fft_backend_cache`); this cache is the module's only state.
The two libraries round differently (the outputs agree within float32 rounding, not bit for bit); the
environment variable ``LORARFFI_FFT_BACKEND=scipy`` (or ``torch``) pins what ``"auto"`` means, for runs that
must reproduce each other bit for bit across processes.
The post-processing takes the magnitude of the cropped bins only (the fftshift is folded into the bin
selection), in the spectra's own memory order (scipy's frequency-major, torch's time-major), and uses two
identities: the RMS normalisation and scipy's ``1 / n_fft`` scale cancel in the column ratio, and
``log10|a/b|^2 = 2 (log10|a| - log10|b|)``, so each cropped bin needs one logarithm, not one per ratio; the
differences are taken over each block as one flat array and copied into the output once.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import scipy.fft

from lorarffi.errors import ConfigError

__all__ = ["spectrogram", "channel_independent_spectrogram", "stft_frame_count", "crop_rows", "FftBackend",
           "available_fft_backends", "fastest_fft_backend", "clear_fft_backend_cache", "as_packets",
           "is_tensor"]

logger = logging.getLogger(__name__)

FftBackend = Literal["auto", "scipy", "torch"]
_FFT_BACKEND_CHOICES = get_args(FftBackend)

# FFT bins per block of packets: 2 MiB of complex64 spectra (16 packets of 63 x 256), so that a block's FFT,
# magnitudes and logarithms stay in cache.
_BLOCK_BINS = 1 << 18
_TINY = float(np.finfo(np.float32).tiny)
# Timing runs per backend when fft_backend="auto" measures (the median counts).
_TIMING_RUNS = 5
# The module's only state: the backend measured fastest, per FFT size, for fft_backend="auto".
_FASTEST_FFT_BACKEND: dict[int, str] = {}


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
    fft_backend: FftBackend = "auto",
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
        Fractions ``(lo, hi)`` of the shifted rows to keep (see :func:`crop_rows`); ``None`` keeps all
        ``n_fft`` rows, ``(0.3, 0.7)`` the TIFS crop.
    top_db : float
        Dynamic range kept, in dB: magnitudes are floored at ``top_db`` below the packet's strongest kept bin
        (see the module docstring).
    workers : int, optional
        Threads, as ``scipy.fft`` counts them (``None`` is one, the calling thread; -1 all cores). Each thread
        transforms whole cache-sized blocks of packets (16 packets of 8192 samples), so a batch of one block
        runs on one thread. With the torch FFT backend each block's FFT also uses torch's intra-op threads
        (``torch.set_num_threads``): with ``workers`` above one, one intra-op thread keeps the threads from
        oversubscribing the cores.
    fft_backend : {"auto", "scipy", "torch"}
        FFT library: ``"auto"`` the one :func:`fastest_fft_backend` measured fastest here (measured on first
        use of an FFT size, then cached); ``"torch"`` needs torch importable. Every backend gives the same
        values to float32 rounding; the output does not depend on ``workers``.

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
    return _transform(iq, n_fft, hop, crop, top_db, workers, fft_backend, ratio=False)


def channel_independent_spectrogram(
    iq: Any,
    *,
    n_fft: int = 256,
    hop: int = 128,
    crop: tuple[float, float] | None = (0.3, 0.7),
    top_db: float = 120.0,
    workers: int | None = None,
    fft_backend: FftBackend = "auto",
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
    n_fft, hop, crop, top_db, workers, fft_backend
        As for :func:`spectrogram` (here ``crop`` defaults to the TIFS crop ``(0.3, 0.7)``).

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
    >>> bool(np.allclose(channel_independent_spectrogram((0.5 - 2j) * x), out, atol=1e-3))
    True
    """
    return _transform(iq, n_fft, hop, crop, top_db, workers, fft_backend, ratio=True)


def available_fft_backends() -> tuple[str, ...]:
    """FFT backends usable in this process: ``"scipy"`` always, then ``"torch"`` if torch imports.

    Imports torch to find out (once; later calls find it in ``sys.modules``).

    Examples
    --------
    >>> available_fft_backends()[0]
    'scipy'
    """
    return ("scipy", "torch") if _import_torch() is not None else ("scipy",)


# torch replaces scipy only when its median time is below this fraction of scipy's.
_CLEAR_WIN = 0.8


def fastest_fft_backend(n_fft: int = 256, *, workers: int | None = None) -> str:
    """The FFT backend that ``fft_backend="auto"`` uses for ``n_fft``-point frames on ``workers`` threads.

    Measured on first use, then cached: each of :func:`available_fft_backends` computes the
    channel-independent spectrogram of one cache-sized block of random packets per thread (frames of
    ``n_fft`` samples, hop ``n_fft // 2``; up to 8 blocks) with ``workers`` threads, five times in turn after
    a warm-up; the backend with the shortest median wall-clock time wins, torch only when it is faster than
scipy by ``1 / _CLEAR_WIN`` (so that a near tie, whose winner the host's load decides, keeps scipy and two
runs of a program on one machine agree). The median, not
    the best run, so that a backend that stalls when other processes load the machine (torch's intra-op
    thread team can) loses to one that does not. The choice is kept for the life of the process, per FFT
    size, thread count and torch intra-op thread count (``torch.get_num_threads()``): this cache is the only
    state of :mod:`lorarffi.dsp`. :func:`clear_fft_backend_cache` forgets it. Thread-safe: two threads
    measuring at once each store a valid choice.

    Parameters
    ----------
    n_fft : int
        FFT size (frame length) in samples.
    workers : int, optional
        Threads, as for :func:`spectrogram`.

    Returns
    -------
    backend : str
        ``"scipy"`` or ``"torch"``, one of :func:`available_fft_backends`.

    Examples
    --------
    >>> fastest_fft_backend(256) in available_fft_backends()
    True
    """
    _check_stft_params(n_fft, 1)
    n_threads = _thread_count(workers)
    torch = _import_torch()
    backends = ("scipy", "torch") if torch is not None else ("scipy",)
    key = (int(n_fft), n_threads, torch.get_num_threads() if torch is not None else 0)
    backend = _FASTEST_FFT_BACKEND.get(key)
    if backend is None:
        seconds = _time_fft_backends(int(n_fft), n_threads, backends)
        backend = min(seconds, key=lambda name: seconds[name] / (1.0 if name == "scipy" else _CLEAR_WIN))
        logger.debug("FFT backend for n_fft=%d on %d threads: %s (median run: %s)", n_fft, n_threads, backend,
                     ", ".join(f"{name} {s * 1e3:.2f} ms" for name, s in seconds.items()))
        _FASTEST_FFT_BACKEND[key] = backend
    return backend


def clear_fft_backend_cache() -> None:
    """Forget every :func:`fastest_fft_backend` choice: the next ``fft_backend="auto"`` call measures again.

    Examples
    --------
    >>> clear_fft_backend_cache()
    """
    _FASTEST_FFT_BACKEND.clear()


def is_tensor(obj: object) -> bool:
    """True for a torch tensor, without importing torch (a tensor implies torch is already imported).

    Examples
    --------
    >>> is_tensor(np.zeros(3))
    False
    """
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def as_packets(iq: Any) -> tuple[Any, bool]:
    """``iq`` as packets: an ``(N, L)`` complex64 array or tensor, and whether ``iq`` was one packet ``(L,)``.

    Parameters
    ----------
    iq : ndarray or torch.Tensor, numeric, shape (N, L) or (L,)
        Packets or one packet; not copied if already a C-contiguous complex64 array (or complex64 tensor).

    Returns
    -------
    packets : ndarray or torch.Tensor of complex64, shape (N, L)
        Same kind and device as ``iq``; ``(1, L)`` for a single packet.
    one : bool
        True when ``iq`` was 1-D (drop the batch axis of the result).

    Examples
    --------
    >>> x, one = as_packets(np.ones(4))
    >>> x.shape, x.dtype, one
    ((1, 4), dtype('complex64'), True)
    """
    if is_tensor(iq):
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
    one = x.ndim == 1
    return (x[None] if one else x), one


def _check_stft_params(n_fft: int, hop: int) -> None:
    for name, value in (("n_fft", n_fft), ("hop", hop)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name}={value!r} is not valid: use a positive integer number of samples")


def _torch_int_dtypes(torch: Any) -> tuple[Any, ...]:
    return (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _import_torch() -> Any:
    """The torch module, or None when it cannot be imported here."""
    try:
        import torch
    except (ImportError, OSError):                                       # absent, or a broken install
        return None
    return torch


def _check_fft_backend(fft_backend: object) -> None:
    if not isinstance(fft_backend, str) or fft_backend not in _FFT_BACKEND_CHOICES:
        raise ConfigError(f"fft_backend={fft_backend!r} is not valid: use one of "
                          f"{', '.join(repr(c) for c in _FFT_BACKEND_CHOICES)}")


FFT_BACKEND_ENV = "LORARFFI_FFT_BACKEND"


def _resolve_fft_backend(fft_backend: str, n_fft: int, workers: int | None) -> str:
    if fft_backend == "auto":
        pinned = os.environ.get(FFT_BACKEND_ENV, "").strip()
        if pinned in ("scipy", "torch"):
            fft_backend = pinned
        elif pinned not in ("", "auto"):
            raise ConfigError(f"{FFT_BACKEND_ENV}={pinned!r} is not valid: use 'auto', 'scipy' or 'torch'")
        else:
            return fastest_fft_backend(n_fft, workers=workers)
    if fft_backend == "torch" and _import_torch() is None:
        raise ConfigError(f"fft_backend={fft_backend!r} is not valid here: torch cannot be imported; "
                          "use 'auto' or 'scipy'")
    return fft_backend


def _time_fft_backends(n_fft: int, n_threads: int, backends: tuple[str, ...]) -> dict[str, float]:
    """Median wall-clock seconds of :data:`_TIMING_RUNS` runs of each backend that works, on one block of
    packets per thread (at most 8 blocks), run in turn."""
    hop = max(1, n_fft // 2)
    n_frames = 63
    n_packets = _packets_per_block(1 << 30, n_frames, n_fft) * min(n_threads, 8)
    shape = (n_packets, 2 * ((n_frames - 1) * hop + n_fft))
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32).view(np.complex64)
    runs = _bin_runs(n_fft, *crop_rows(n_fft, (0.3, 0.7)))

    def run(backend: str) -> float:
        t0 = time.perf_counter()
        _transform_packets(x, n_fft, hop, n_frames, runs, 1e-6, True, n_threads=n_threads, backend=backend)
        return time.perf_counter() - t0

    seconds: dict[str, list[float]] = {}
    for backend in backends:
        try:
            run(backend)                                                 # warm-up: plans, threads, pages
        except RuntimeError as exc:                                      # e.g. a torch built without FFT
            logger.debug("FFT backend %s left out: %s", backend, exc)
            continue
        seconds[backend] = []
    for _ in range(_TIMING_RUNS):
        for backend, times in seconds.items():
            times.append(run(backend))
    return {backend: statistics.median(times) for backend, times in seconds.items()}


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
               fft_backend: str, *, ratio: bool) -> Any:
    _check_stft_params(n_fft, hop)
    if (isinstance(top_db, bool) or not isinstance(top_db, (int, float, np.integer, np.floating))
            or not 0 < top_db < math.inf):
        raise ConfigError(f"top_db={top_db!r} is not valid: use a finite positive number of dB")
    n_threads = _thread_count(workers)
    _check_fft_backend(fft_backend)
    first, stop = crop_rows(n_fft, crop)
    x, one = as_packets(iq)
    n_samples = int(x.shape[-1])
    n_frames = stft_frame_count(n_samples, n_fft=n_fft, hop=hop)
    need = n_fft + hop if ratio else n_fft
    if n_frames < (2 if ratio else 1):
        raise ConfigError(f"iq has {n_samples} samples per packet: need at least {need} "
                          f"(n_fft={n_fft}, hop={hop}) for {'two frames' if ratio else 'one frame'}")
    backend = _resolve_fft_backend(fft_backend, n_fft, workers)
    floor_rel = 10.0 ** (-top_db / 20.0)                                  # amplitude floor / peak amplitude
    runs = _bin_runs(n_fft, first, stop)
    if is_tensor(x):
        import torch

        host = x.detach().resolve_conj().cpu().contiguous().numpy()
        out = torch.from_numpy(_transform_packets(host, n_fft, hop, n_frames, runs, floor_rel, ratio,
                                                  n_threads=n_threads, backend=backend)).to(x.device)
    else:
        out = _transform_packets(x, n_fft, hop, n_frames, runs, floor_rel, ratio, n_threads=n_threads,
                                 backend=backend)
    return out[0] if one else out


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
    """Packets in one cache-sized block (``_BLOCK_BINS`` FFT bins), at least one, at most all of them."""
    return max(1, min(_BLOCK_BINS // (n_frames * n_fft), n_packets))


def _run_in_threads(work: Callable[[int], None], n_threads: int) -> None:
    """``work(t)`` for ``t`` in ``range(n_threads)``, each on its own thread (inline for one); joins them all
    and re-raises the first error."""
    if n_threads == 1:
        work(0)
        return
    with ThreadPoolExecutor(n_threads, thread_name_prefix="lorarffi-spectrogram") as pool:
        for done in [pool.submit(work, t) for t in range(n_threads)]:
            done.result()


def _frame_spectra(x: npt.NDArray[np.complex64], n_fft: int, hop: int, n_frames: int,
                   backend: str) -> npt.NDArray[np.complex64]:
    """Spectra ``(b, n_fft, M)`` (frequency, then time) of the frames of packets ``x`` ``(b, L)``, complex64,
    in the backend's own memory order: frequency-major from scipy, time-major (a transposed view) from torch.
    """
    if backend == "torch":
        import torch

        if not x.flags.writeable:                                        # torch.from_numpy warns on these
            x = x.copy()
        frames = torch.from_numpy(x).unfold(-1, n_fft, hop)              # (b, M, n_fft) view, no copy
        return torch.fft.fft(frames, dim=-1).numpy().transpose(0, 2, 1)
    step = x.strides[1]
    # (b, n_fft, M) view: sample n of frame m of packet k is x[k, m * hop + n].
    frames = np.lib.stride_tricks.as_strided(
        x, (x.shape[0], n_fft, n_frames), (x.strides[0], step, hop * step), writeable=False)
    return scipy.fft.fft(frames, axis=1, workers=1)


def _transform_packets(x: npt.NDArray[np.complex64], n_fft: int, hop: int, n_frames: int,
                       runs: list[tuple[int, int]], floor_rel: float, ratio: bool, *, n_threads: int,
                       backend: str) -> npt.NDArray[np.float32]:
    """The transform of packets ``x`` ``(N, L)``: ``(N, F, M - 1)`` ratios or ``(N, F, M)`` log powers."""
    n_packets, n_samples = x.shape
    n_rows = sum(b - a for a, b in runs)
    out = np.empty((n_packets, n_rows, n_frames - 1 if ratio else n_frames), dtype=np.float32)
    if n_packets == 0:
        return out
    block = _packets_per_block(n_packets, n_frames, n_fft)
    starts = range(0, n_packets, block)
    n_threads = min(n_threads, len(starts))

    def run_blocks(first_block: int) -> None:
        # Every thread takes every n_threads-th block, FFT and post-processing together: the FFT libraries
        # and numpy's ufuncs release the GIL, so all of the work runs on all the threads.
        buffers: dict[str, npt.NDArray[np.float32]] = {}
        for i in starts[first_block::n_threads]:
            j = min(i + block, n_packets)
            spec = _frame_spectra(x[i:j], n_fft, hop, n_frames, backend)  # (b, n_fft, M) complex64
            if not buffers:                                              # in the spectra's memory order
                buffers["log"] = np.empty(block * n_rows * n_frames, dtype=np.float32)
                buffers["diff"] = np.empty(buffers["log"].size if ratio else 0, dtype=np.float32)
            log_mag = _floored_log_magnitude(spec, runs, n_fft, floor_rel, buffers["log"])
            if ratio:
                _column_ratio(log_mag, buffers["diff"], out[i:j])
            else:
                _log_power(log_mag, x[i:j], n_fft, out[i:j])

    # Loops over cache-sized blocks of packets (each block fully vectorised), not over packets.
    _run_in_threads(run_blocks, n_threads)
    return out


def _floored_log_magnitude(spec: npt.NDArray[np.complex64], runs: list[tuple[int, int]], n_fft: int,
                           floor_rel: float, buffer: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``log10 max(|S|, floor)`` of the kept bins of spectra ``(b, n_fft, M)``: a ``(b, F, M)`` float32 view
    of ``buffer``, laid out in the spectra's memory order (so that every pass reads and writes in order)."""
    n_packets, _, n_frames = spec.shape
    n_rows = sum(b - a for a, b in runs)
    time_major = spec.strides[1] < spec.strides[2]
    size = n_packets * n_rows * n_frames
    if time_major:
        mem = buffer[:size].reshape(n_packets, n_frames, n_rows)
        mag = mem.transpose(0, 2, 1)
    else:
        mem = mag = buffer[:size].reshape(n_packets, n_rows, n_frames)
    row = 0
    for a, b in runs:                                                    # fftshift + crop, magnitudes only
        np.abs(spec[:, a:b], out=mag[:, row:row + b - a])
        row += b - a
    # Floor at top_db below each packet's strongest kept bin. Fast path: when the block's weakest bin is
    # within top_db of its strongest (and not below tiny), no packet's bin is under its own floor. A NaN or
    # inf anywhere in the block fails the test (NaN compares false), so the other packets get theirs.
    lowest, highest = float(mem.min()), float(mem.max())
    if not (lowest >= _TINY and lowest >= highest * floor_rel):          # rare: per-packet floors
        peak = mem.reshape(n_packets, -1).max(axis=1)                    # strongest kept |FFT| per packet
        peak[peak == 0] = n_fft                                          # all-zero packet: as if peak at 0 dB
        floor = np.maximum(peak * floor_rel, _TINY)
        np.maximum(mem, floor[:, None, None], out=mem)
    np.log10(mem, out=mem)
    return mag


def _column_ratio(log_mag: npt.NDArray[np.float32], buffer: npt.NDArray[np.float32],
                  out: npt.NDArray[np.float32]) -> None:
    """``out = 2 (log_mag[..., 1:] - log_mag[..., :-1])``: ``log10 |S_{m+1} / S_m|^2``, ``(b, F, M - 1)``.

    ``log_mag`` is a ``(b, F, M)`` view of a contiguous array in either memory order. The differences are
    taken over the flat array in one contiguous pass (in ``buffer``), those straddling a row or a packet
    dropped, then copied into ``out`` once.
    """
    step = log_mag.strides[2] // log_mag.itemsize                        # flat distance of column m to m + 1
    mem = log_mag if step == 1 else log_mag.transpose(0, 2, 1)           # contiguous
    flat, diff = mem.reshape(-1), buffer[: mem.size]
    np.subtract(flat[step:], flat[:-step], out=diff[:-step])
    diff[:-step] *= 2.0
    diff_mag = diff.reshape(mem.shape) if step == 1 else diff.reshape(mem.shape).transpose(0, 2, 1)
    np.copyto(out, diff_mag[..., :-1])


def _log_power(log_mag: npt.NDArray[np.float32], x: npt.NDArray[np.complex64], n_fft: int,
               out: npt.NDArray[np.float32]) -> None:
    """``out = 2 log_mag - log10(P n_fft^2)``: ``log10 |S|^2`` with scipy's ``1 / n_fft`` scale of each packet
    of ``x`` scaled to unit mean power ``P`` (summed in float64; an all-zero packet is left unscaled)."""
    samples = x.view(np.float32)                                         # (b, 2L): re, im interleaved
    power = np.einsum("ij,ij->i", samples, samples, dtype=np.float64) / x.shape[1]
    power[power == 0] = 1.0
    np.multiply(log_mag, 2.0, out=out)
    out -= np.log10(power * n_fft**2).astype(np.float32)[:, None, None]
