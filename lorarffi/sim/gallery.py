"""A notebook-ready figure of what each simulated impairment does to a LoRa preamble's spectrogram."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.spectrogram import spectrogram
from lorarffi.sim import channel, impairments

__all__ = ["impairment_gallery", "impairment_examples"]

_N_FFT = 256
_HOP = 64


def impairment_examples(
    cfg: LoRaConfig | None = None, *, seed: int = 0
) -> tuple[npt.NDArray[np.complex64], dict[str, npt.NDArray[np.complex64]]]:
    """A clean preamble and the same preamble with each impairment alone, exaggerated to be visible.

    Returns
    -------
    clean : ndarray of complex64, shape (cfg.preamble_samples,)
    impaired : dict of str to ndarray of complex64, same shape
        Keyed by a short title that states the parameters used.
    """
    cfg = cfg or LoRaConfig()
    rng = np.random.default_rng(seed)
    n = cfg.preamble_samples
    fs = cfg.fs_hz

    def pll(**kw: Any) -> npt.NDArray[np.complex64]:
        return impairments.pll_packet_waveform(cfg, n_samples=n, **kw)

    clean = pll()
    effects: dict[str, Callable[[], npt.NDArray[np.complex64]]] = {
        "sweep nonlinearity P2=3 kHz": lambda: pll(sweep_coeffs_hz=(0.0, 3e3)),
        "PLL settling 30 %, 3 us, 100 kHz": lambda: pll(
            transient_overshoot=0.3, transient_time_constant_s=3e-6, transient_ring_hz=100e3
        ),
        "PA ramp 200 us": lambda: pll(pa_ramp_s=200e-6),
        "phase noise 10 deg RMS": lambda: impairments.phase_noise(
            clean, phase_noise_rms_deg=10.0, corner_hz=20e3, fs_hz=fs, rng=rng
        ),
        "IQ imbalance 3 dB, 15 deg": lambda: impairments.iq_imbalance(
            clean, iq_gain_db=3.0, iq_phase_deg=15.0
        ),
        "DC offset 0.3": lambda: impairments.dc_offset(clean, dc_offset=0.3),
        "TX ripple 6 dB / 40 kHz": lambda: impairments.tx_filter_ripple(
            clean, ripple_db=6.0, ripple_period_hz=40e3, fs_hz=fs
        ),
        "PA AM/PM on a rippled signal": lambda: impairments.pa_nonlinearity(
            impairments.tx_filter_ripple(clean, ripple_db=6.0, ripple_period_hz=40e3, fs_hz=fs),
            saturation=0.8,
            smoothness=1.0,
            am_pm_deg=30.0,
        ),
        "CFO 20 kHz": lambda: channel.frequency_shift(clean, 20e3, fs_hz=fs),
        "multipath 300 ns, K=0": lambda: channel.apply_multipath(
            clean,
            channel.draw_multipath(1, rms_delay_spread_s=300e-9, k_factor=0.0, doppler_hz=0.0, rng=rng),
            fs_hz=fs,
        ),
        "Doppler 100 Hz, K=0": lambda: channel.apply_multipath(
            clean,
            channel.draw_multipath(1, rms_delay_spread_s=50e-9, k_factor=0.0, doppler_hz=100.0, rng=rng),
            fs_hz=fs,
        ),
        "AWGN 0 dB in-band": lambda: channel.add_awgn(
            clean, 0.0, reference="in_band", rng=rng, bw_hz=cfg.bw_hz, fs_hz=fs
        ),
    }
    return clean, {title: make() for title, make in effects.items()}


def impairment_gallery(cfg: LoRaConfig | None = None, *, seed: int = 0) -> Any:
    """A matplotlib Figure: the clean preamble's spectrogram, then each impairment's and its difference.

    Each row shows the impaired preamble's spectrogram (dB, ``log10|S|^2`` of the RMS-normalised packet, STFT
    256/64, the band +-bw) and its difference from the clean one (dB). Uses the Agg backend: no display
    needed.

    Parameters
    ----------
    cfg : LoRaConfig, optional
        Default SF7, 125 kHz, 1 MS/s.
    seed : int
        Seed of the random impairments (phase noise, channels, noise).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    cfg = cfg or LoRaConfig()
    clean, impaired = impairment_examples(cfg, seed=seed)
    f_hz = (np.arange(_N_FFT) - _N_FFT // 2) * cfg.fs_hz / _N_FFT
    band = np.abs(f_hz) <= cfg.bw_hz
    n_frames = (clean.size - _N_FFT) // _HOP + 1
    extent = (0.0, (n_frames * _HOP) / cfg.fs_hz * 1e3, f_hz[band][0] / 1e3, f_hz[band][-1] / 1e3)

    def spec_db(x: npt.NDArray[np.complex64]) -> npt.NDArray[np.float32]:
        return 10 * spectrogram(x, n_fft=_N_FFT, hop=_HOP, crop=None)[band]

    ref = spec_db(clean)
    rows = len(impaired) + 1
    fig = Figure(figsize=(9, 1.6 * rows), layout="constrained")
    axes = fig.subplots(rows, 2, sharex=True, sharey=True, squeeze=False)
    vmin, vmax = float(ref.max()) - 50, float(ref.max())
    kw = {"origin": "lower", "aspect": "auto", "extent": extent}
    axes[0, 0].imshow(ref, vmin=vmin, vmax=vmax, cmap="viridis", **kw)
    axes[0, 0].set_title("clean preamble (dB)", fontsize=8)
    axes[0, 1].axis("off")
    for r, (title, x) in enumerate(impaired.items(), start=1):
        s = spec_db(x)
        axes[r, 0].imshow(s, vmin=vmin, vmax=vmax, cmap="viridis", **kw)
        axes[r, 0].set_title(title, fontsize=8)
        diff = s - ref
        lim = max(float(np.percentile(np.abs(diff), 99)), 1e-3)
        axes[r, 1].imshow(diff, vmin=-lim, vmax=lim, cmap="RdBu_r", **kw)
        axes[r, 1].set_title(f"difference from clean (+-{lim:.2g} dB)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("kHz", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("ms", fontsize=7)
    for ax in axes.ravel():
        ax.tick_params(labelsize=6)
    return fig
