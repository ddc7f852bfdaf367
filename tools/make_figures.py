"""Regenerate the figures of the README and the user guides in docs/img/ from simulated data and the shared
recordings: ``python tools/make_figures.py`` (about a minute: it trains two small models)."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lorarffi.dsp import LoRaConfig, channel_independent_spectrogram, detect, spectrogram  # noqa: E402
from lorarffi.sim import Session, make_fleet, simulate_stream  # noqa: E402
from lorarffi.sim.gallery import impairment_gallery  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"


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


def guide_figures(out: pathlib.Path) -> list[pathlib.Path]:
    """The user guides' figures, at small scale: a 5-device fleet's day-2 evaluation (confusion matrix, CFO
    per device), an enrollment ROC and a real recording's spectrogram."""
    import tempfile

    from lorarffi.datasets.recording import open_recording
    from lorarffi.rffi import plots
    from lorarffi.rffi.embedding import load_embedder
    from lorarffi.rffi.evaluate import evaluate
    from lorarffi.rffi.inference import load_classifier
    from lorarffi.rffi.knn import ReferenceIndex
    from lorarffi.rffi.rogue import rogue_figures
    from lorarffi.rffi.train import TrainConfig, train
    from lorarffi.sim import Session, make_fleet, simulate_preamble_set

    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    fleet = make_fleet(9, seed=0, spread=3.0)
    day1, day2 = Session(day=1), Session(day=2, place=2)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        tr = simulate_preamble_set(fleet[:5], cfg, 100, session=day1, rng=np.random.default_rng(0))
        te = simulate_preamble_set(fleet[:5], cfg, 40, session=day2, rng=np.random.default_rng(1))
        train(tr.preambles, tr.device_ids, cfg, f"{tmp}/m", TrainConfig(epochs=8, max_time_s=None))
        clf = load_classifier(f"{tmp}/m")
        res, dec = evaluate(clf, te.preambles, te.device_ids)
        labels = [str(d) for d in res.device_ids]
        fig = plots.confusion_figure(
            res.confusion_hybrid,
            labels,
            [*labels, "unknown"],
            title=f"CNN + CFO gate, day 2: accuracy {100 * res.accuracy_hybrid:.1f} %",
        )
        written.append(plots.save_figure(fig, out / "confusion_hybrid.png", dpi=70))
        fig = plots.cfo_per_device_figure(dec.cfo_hz, te.device_ids, dec.device_id, clf.gate)
        written.append(plots.save_figure(fig, out / "cfo_per_device.png", dpi=70))
        # enrollment: an extractor on devices 1-5, devices 6-8 enrolled, device 9 a rogue
        train(
            tr.preambles,
            tr.device_ids,
            cfg,
            f"{tmp}/x",
            TrainConfig(objective="triplet", epochs=10, max_time_s=None),
        )
        emb = load_embedder(f"{tmp}/x")
        enr = simulate_preamble_set(fleet[5:8], cfg, 100, session=day1, rng=np.random.default_rng(2))
        test = simulate_preamble_set(fleet[5:], cfg, 40, session=day2, rng=np.random.default_rng(3))
        index = ReferenceIndex(enr.device_ids, emb.embed(emb.preprocess(enr.preambles).iq), k=5)
        score = index.search(emb.embed(emb.preprocess(test.preambles).iq)).score
        legit = test.device_ids != 9
        fig = plots.roc_figure(
            rogue_figures(score[legit], score[~legit]), title="3 enrolled devices vs a rogue"
        )
        written.append(plots.save_figure(fig, out / "enrollment_roc.png", dpi=70))
    rec = open_recording(
        ROOT.parent / "shared" / "data" / "oat4cat_lora433_sf11_bw500" / "oat4cat_signal_0000.wav"
    )
    iq = rec.read(85_000, 280_000)
    spec_db = 10 * spectrogram(iq, n_fft=1024, hop=512)
    fig = plt.figure(figsize=(7, 2.8), layout="constrained")
    ax = fig.subplots()
    extent = (85_000 / rec.fs_hz * 1e3, 365_000 / rec.fs_hz * 1e3, -rec.fs_hz / 2e3, rec.fs_hz / 2e3)
    ax.imshow(spec_db, origin="lower", aspect="auto", extent=extent, vmin=spec_db.max() - 50, cmap="viridis")
    ax.set(xlabel="time (ms)", ylabel="frequency (kHz)", title="a real LoRa packet (SF11, 500 kHz, 2.4 MS/s)")
    fig.savefig(out / "real_packet.png", dpi=60)
    plt.close(fig)
    written.append(out / "real_packet.png")
    return written


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    signal_path_figure(OUT / "signal_path.png")
    fig = impairment_gallery(seed=0)
    fig.savefig(OUT / "impairments.png", dpi=50)
    written = [OUT / "signal_path.png", OUT / "impairments.png", *guide_figures(OUT)]
    print("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
