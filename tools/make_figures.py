"""Regenerate the README figures in docs/img/ from simulated data: ``python tools/make_figures.py``."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lorarffi.dsp import LoRaConfig, channel_independent_spectrogram, detect, spectrogram  # noqa: E402
from lorarffi.sim import Session, make_fleet, simulate_stream  # noqa: E402
from lorarffi.sim.gallery import impairment_gallery  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "img"


def signal_path_figure(path: pathlib.Path) -> None:
    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    iq, events = simulate_stream(make_fleet(3, seed=1), cfg, duration_s=2.0, session=Session(), seed=3)
    packets = detect(iq, cfg)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    t_ms = np.arange(iq.size) / cfg.fs_hz * 1e3
    axes[0].plot(t_ms[::20], np.abs(iq[::20]), lw=0.4, color="0.3")
    for p in packets:
        axes[0].axvspan(p.start / cfg.fs_hz * 1e3, p.stop / cfg.fs_hz * 1e3, color="tab:orange", alpha=0.4)
    axes[0].set(title=f"stream: {len(packets)} packets detected", xlabel="time (ms)", ylabel="|iq|")
    p = packets[0]
    spec = spectrogram(p.preamble, crop=(0.3, 0.7))
    axes[1].imshow(spec, aspect="auto", origin="lower", cmap="magma")
    axes[1].set(title=f"aligned preamble, CFO {p.cfo_hz:.0f} Hz removed", xlabel="STFT frame", ylabel="bin")
    axes[2].imshow(channel_independent_spectrogram(p.preamble), aspect="auto", origin="lower", cmap="viridis")
    axes[2].set(title="channel-independent spectrogram", xlabel="column ratio", ylabel="bin")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    signal_path_figure(OUT / "signal_path.png")
    fig = impairment_gallery(seed=0)
    fig.savefig(OUT / "impairments.png", dpi=50)
    print(f"wrote {OUT}/signal_path.png, {OUT}/impairments.png")


if __name__ == "__main__":
    main()
