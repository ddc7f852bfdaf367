"""channel_independent_spectrogram on 2,000 packets vs the authors' per-packet scipy loop and the FFT floor.

Run: ``.venv/bin/python benchmarks/run.py --only spectrogram`` (or this file directly: it prints the section).
Two threads: ``OMP_NUM_THREADS=2`` is set before numpy is imported, ``scipy.fft`` runs with ``workers=2`` and
torch with ``torch.set_num_threads(2)``. Same inputs for every contender, in the same run; fast contenders are
timed interleaved (floor, ours, floor, ours, ...) so load from other processes hits them alike.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "2"  # before numpy is imported (a no-op if an earlier benchmark imported it)

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
import scipy.signal  # noqa: E402

from lorarffi.dsp import channel_independent_spectrogram  # noqa: E402

N_PACKETS = 2000
N_SAMPLES = 8192
N_FFT, HOP = 256, 128
THREADS = 2
REPEATS_FAST = 21
REPEATS_AUTHORS = 3
REPEATS_TORCH = 7
TARGET_VS_AUTHORS = 10.0
TARGET_VS_FLOOR = 1.5


def authors_loop(data: np.ndarray) -> np.ndarray:
    """The authors' ``ChannelIndSpectrogram`` (gxhen/LoRa_RFFI, paper_notes §5): a loop over packets."""
    num_sample = data.shape[0]
    num_row = int(256 * 0.4)
    num_column = int(np.floor((data.shape[1] - 256) / 128 + 1) - 1)
    data_channel_ind_spec = np.zeros([num_sample, num_row, num_column, 1])
    for i in range(num_sample):
        x = data[i] / np.sqrt(np.mean(np.abs(data[i]) ** 2))
        _, _, spec = scipy.signal.stft(x, window="boxcar", nperseg=256, noverlap=128, nfft=256,
                                       return_onesided=False, padded=False, boundary=None)
        spec = np.fft.fftshift(spec, axes=0)
        chan_ind_spec = spec[:, 1:] / spec[:, :-1]
        chan_ind_spec_amp = np.log10(np.abs(chan_ind_spec) ** 2)
        data_channel_ind_spec[i, :, :, 0] = chan_ind_spec_amp[round(256 * 0.3):round(256 * 0.7)]
    return data_channel_ind_spec


def frame_view(x: np.ndarray) -> np.ndarray:
    """(N, M, n_fft) strided view of the frames of (N, L) packets (no copy)."""
    n_frames = (x.shape[1] - N_FFT) // HOP + 1
    s0, s1 = x.strides
    shape = (x.shape[0], n_frames, N_FFT)
    return np.lib.stride_tricks.as_strided(x, shape, (s0, HOP * s1, s1), writeable=False)


def fft_one_call(x: np.ndarray) -> np.ndarray:
    """The bare complex64 FFT of the same frames in one ``scipy.fft`` call with the same threads."""
    return scipy.fft.fft(frame_view(x), axis=-1, workers=THREADS)


def fft_floor(x: np.ndarray) -> None:
    """The floor: the bare complex64 FFT of the same frames, the fastest way scipy.fft does it here.

    Ours' cache-sized blocks of packets dealt to ``THREADS`` threads in ours' way, each running a one-thread
    FFT per block along the same axis as ours; nothing else (the spectra are dropped).
    """
    from lorarffi.dsp.spectrogram import _packets_per_block, _run_in_threads

    frames = frame_view(x).transpose(0, 2, 1)                            # (N, n_fft, M), as ours
    block = _packets_per_block(x.shape[0], frames.shape[2], N_FFT)
    starts = range(0, x.shape[0], block)

    def run_blocks(first: int) -> None:
        for i in starts[first::THREADS]:
            scipy.fft.fft(frames[i:i + block], axis=1, workers=1)

    _run_in_threads(run_blocks, THREADS)


def torch_fft_floor(xt) -> None:
    """torch's bare FFT of the same frames (MKL in x86 CPU builds), in the torch path's blocks of packets."""
    import torch

    from lorarffi.dsp.spectrogram import _TORCH_BLOCK_BINS

    frames = xt.unfold(-1, N_FFT, HOP)                                   # (N, M, n_fft) view
    block = max(1, _TORCH_BLOCK_BINS // (frames.shape[1] * N_FFT))
    for i in range(0, frames.shape[0], block):
        torch.fft.fft(frames[i:i + block], dim=-1)


def _timed(fn, *args) -> tuple[float, float]:
    """Wall-clock and process CPU time (all threads) of one call, in seconds."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0


def _interleaved(contenders: dict[str, tuple], repeats: int) -> dict[str, list[tuple[float, float]]]:
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for fn, *args in contenders.values():                  # warm-up (plans, page cache, thread pools)
        fn(*args)
    for _ in range(repeats):
        for name, (fn, *args) in contenders.items():
            times[name].append(_timed(fn, *args))
    return times


def run() -> str:
    import torch

    rng = np.random.default_rng(20210101)
    x = ((rng.standard_normal((N_PACKETS, N_SAMPLES)) + 1j * rng.standard_normal((N_PACKETS, N_SAMPLES)))
         * rng.uniform(0.1, 10.0, (N_PACKETS, 1))).astype(np.complex64)
    x_authors = x.astype(np.complex128)          # the authors load HDF5 I/Q as float64, combine to complex128

    torch_threads = torch.get_num_threads()
    xt = torch.from_numpy(x)

    try:
        # Rounds: the authors' loop once, then the floor, ours and the one-call FFT interleaved, so all see
        # the same load.
        ours = {"floor": (fft_floor, x),
                "ours": (lambda a: channel_independent_spectrogram(a, workers=THREADS), x),
                "one_call": (fft_one_call, x)}
        times: dict[str, list[tuple[float, float]]] = {"authors": [], "floor": [], "ours": [], "one_call": []}
        round_ratios = []                  # per round: the authors' loop / the median of ours right after it
        for _ in range(REPEATS_AUTHORS):
            c0, t0 = time.process_time(), time.perf_counter()
            ref = authors_loop(x_authors)
            times["authors"].append((time.perf_counter() - t0, time.process_time() - c0))
            for key, values in _interleaved(ours, REPEATS_FAST // REPEATS_AUTHORS).items():
                times[key] += values
            round_ours = statistics.median(w for w, _ in times["ours"][-(REPEATS_FAST // REPEATS_AUTHORS):])
            round_ratios.append(times["authors"][-1][0] / round_ours)
        # torch: one thread count per group, set once, so no contender pays for a change of the OpenMP team
        # size made for another.
        torch.set_num_threads(THREADS)
        times.update(_interleaved({"torch": (channel_independent_spectrogram, xt),
                                   "torch_floor": (torch_fft_floor, xt)}, REPEATS_TORCH))
        torch_out = channel_independent_spectrogram(xt).numpy()
        torch.set_num_threads(1)
        times.update(_interleaved({"torch1": (channel_independent_spectrogram, xt)}, REPEATS_TORCH))
        ours_out = channel_independent_spectrogram(x, workers=THREADS)
    finally:
        torch.set_num_threads(torch_threads)
    ref = ref[..., 0]
    err = float(np.abs(ours_out - ref).max())
    err_torch = float(np.abs(torch_out - ref).max())

    med = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    best = {k: min(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    vs_authors = med["authors"] / med["ours"]
    vs_floor = med["ours"] / med["floor"]
    ok_authors = vs_authors >= TARGET_VS_AUTHORS
    ok_floor = vs_floor <= TARGET_VS_FLOOR

    def row(label: str, key: str, note: str) -> str:
        return (f"| {label} | {med[key] * 1e3:.1f} | {best[key] * 1e3:.1f} | {cpu[key] * 1e3:.1f} | "
                f"{med[key] / N_PACKETS * 1e6:.1f} | {med['authors'] / med[key]:.1f}x | "
                f"{best['authors'] / best[key]:.1f}x | {med[key] / med['floor']:.2f}x | {note} |")

    torch_fft_lib = "MKL" if torch.backends.mkl.is_available() else "pocketfft"
    load1, load5, _ = os.getloadavg()
    lines = [
        f"`channel_independent_spectrogram` on {N_PACKETS} packets of {N_SAMPLES} complex64 samples "
        f"(output ({N_PACKETS}, 102, 62) float32), {THREADS} threads (`OMP_NUM_THREADS={THREADS}`, "
        f"`scipy.fft` `workers={THREADS}`, `torch.set_num_threads({THREADS})`). Median (and best) of "
        f"{REPEATS_FAST} repeats (torch {REPEATS_TORCH}), the authors' loop {REPEATS_AUTHORS}, interleaved; "
        f"load average at the end {load1:.1f} (1 min) / {load5:.1f} (5 min), machine shared with other jobs.",
        "",
        "| contender | median ms | best ms | CPU ms (median) | us/packet | vs authors (median) | "
        "vs authors (best) | vs FFT floor | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        row("authors' per-packet scipy loop", "authors",
            "`scipy.signal.stft` per packet, complex128 (gxhen/LoRa_RFFI `ChannelIndSpectrogram`)"),
        row("FFT floor", "floor", f"`scipy.fft.fft` of the (N, 256, 63) complex64 frame view in ours' blocks "
            f"of packets, {THREADS} threads each running one-thread FFTs of whole blocks; nothing else"),
        row("FFT, one call", "one_call", f"`scipy.fft.fft(frames, workers={THREADS})` of the (N, 63, 256) "
            "view in one call (scipy splits it over the threads); nothing else"),
        row("**ours, numpy**", "ours", f"`channel_independent_spectrogram(x, workers=2)`; max abs diff vs "
            f"authors {err:.1e}"),
        row("ours, torch CPU, 2 threads", "torch", f"same function, torch tensor in/out "
            f"(`torch.set_num_threads(2)`); max abs diff vs authors {err_torch:.1e}"),
        row("ours, torch CPU, 1 thread", "torch1", "same, `torch.set_num_threads(1)`"),
        row("torch FFT floor", "torch_floor", "`torch.fft.fft` of the same frames, in the torch path's "
            f"blocks, {THREADS} threads ({torch_fft_lib}); nothing else"),
        "",
        f"- Target >= {TARGET_VS_AUTHORS:.0f}x the authors' loop (medians): "
        f"**{'PASS' if ok_authors else 'FAIL'}** ({vs_authors:.1f}x; best-of-repeats "
        f"{best['authors'] / best['ours']:.1f}x; in process CPU time, less sensitive to load, "
        f"{cpu['authors'] / cpu['ours']:.1f}x). Round by round (the authors' loop, then "
        f"{REPEATS_FAST // REPEATS_AUTHORS} runs each of ours, the floor and the one-call FFT): "
        f"{', '.join(f'{r:.1f}x' for r in round_ratios)}; the spread is the shared host's, the code is the "
        "same.",
        f"- Target <= {TARGET_VS_FLOOR}x the FFT floor: **{'PASS' if ok_floor else 'FAIL'}** "
        f"({vs_floor:.2f}x).",
        f"- Parity: max |ours - authors| = {err:.1e} (numpy), {err_torch:.1e} (torch); the issue's bound is "
        "1e-3.",
        f"- Context: the bare FFT alone is {med['authors'] / med['floor']:.1f}x faster than the authors' "
        f"loop in this run (medians), and ours is {vs_floor:.2f}x the floor. The transform is FFT-bound, so "
        "the ratio to the authors' loop moves with how free the two cores are: the loop is one thread, ours "
        "needs both.",
        f"- The torch path (tensor in, tensor out) is {med['authors'] / med['torch']:.1f}x the authors' loop "
        f"(medians; best-of {best['authors'] / best['torch']:.1f}x) and "
        f"{med['torch'] / med['torch_floor']:.2f}x "
        f"(best-of {best['torch'] / best['torch_floor']:.2f}x) torch's own bare FFT, which is "
        f"{med['floor'] / med['torch_floor']:.1f}x (best-of {best['floor'] / best['torch_floor']:.1f}x) "
        "scipy's here. The numpy path does not use torch's FFT: `lorarffi.dsp` imports torch only for tensor "
        "input (house style; tests/test_dsp_spectrogram.py checks it). Against its own floor the torch path "
        "pays for the transposed write (torch's FFT puts the bins innermost) and the per-block FFT output "
        "allocation.",
        "",
        "How: frames are strided views (no copy); `scipy.fft` on cache-sized blocks of packets, the blocks "
        "dealt to the threads in turn, each thread running the FFT and all the post-processing of its blocks "
        "(numpy and scipy.fft release the GIL), along the "
        "frame axis so the spectrum comes out in the (frequency, time) layout; magnitudes of the 102 cropped "
        "bins only (fftshift folded into the bin choice); RMS normalisation and STFT scale dropped (they "
        "cancel in the column ratio); one `log10` per cropped bin, then `2 * (log|S[m+1]| - log|S[m]|)`.",
        "",
        "Reproduce: `.venv/bin/python benchmarks/run.py --only spectrogram`.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run())
