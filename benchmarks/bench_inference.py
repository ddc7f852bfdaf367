"""Inference cost per model: MACs per packet, batched throughput on 2 threads, single-packet latency.

Every model goes through the real path: a model directory is written (random weights: speed does not depend
on them), loaded with :func:`lorarffi.rffi.inference.load_classifier` and fed detector-style preambles, so the
times include the representation (the (coherent) channel-independent spectrogram, or IQ rows) and the CFO
gate.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

N_THREADS = 2
BATCH = 256
MIN_TIME_S = float(os.environ.get("LORARFFI_BENCH_MIN_TIME_S", "4"))
MODELS = {  # name -> (representation, targets: packets/s, p99 ms)
    "infocom_cnn_wide": ("coherent_channel_independent_spectrogram", (2000, 5.0)),
    "infocom_cnn": ("channel_independent_spectrogram", (2000, 5.0)),
    "rffi_net": ("channel_independent_spectrogram", (2000, 5.0)),
    "tifs_resnet": ("channel_independent_spectrogram", (150, None)),
    "infocom_iq_cnn": ("iq", (None, None)),
}


def count_macs(model, sample) -> int:
    """Multiply-accumulates of one forward pass of a one-packet batch (convolutions and dense layers)."""
    import torch

    macs = 0

    def hook(mod, inp, out):
        nonlocal macs
        if isinstance(mod, torch.nn.Conv2d):
            kh, kw = mod.kernel_size
            macs += out.numel() * (mod.in_channels // mod.groups) * kh * kw
        elif isinstance(mod, torch.nn.Linear):
            macs += out.numel() * mod.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.no_grad():
        model(sample)
    for h in handles:
        h.remove()
    return macs


def _timed(fn, min_time_s: float, min_calls: int) -> list[float]:
    times = []
    t_end = time.perf_counter() + min_time_s
    while len(times) < min_calls or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _model_dir(name: str, rep: str, cfg, tmp: str) -> str:
    import torch

    from lorarffi.dsp.representation import RepresentationConfig, output_shape
    from lorarffi.rffi.checkpoint import ModelDirConfig, save_model_dir
    from lorarffi.rffi.features import shape_hparams
    from lorarffi.rffi.hybrid import CfoGate
    from lorarffi.rffi.models import build_model

    n_classes = 20
    shape = output_shape(RepresentationConfig(rep), cfg.preamble_samples)
    hp = {**shape_hparams(shape), "n_classes": n_classes}
    torch.manual_seed(0)
    model = build_model(name, **hp)
    ids = np.arange(1, n_classes + 1)
    cfo = np.repeat(np.linspace(-3000, 3000, n_classes), 2) + np.tile([-10.0, 10.0], n_classes)
    gate = CfoGate.fit(cfo, np.repeat(np.arange(n_classes), 2), ids)
    path = os.path.join(tmp, name)
    save_model_dir(
        path,
        model,
        ModelDirConfig(
            name, hp, {"name": rep, "params": {}}, cfg, tuple(ids.tolist()), hybrid=gate.to_dict()
        ),
    )
    return path


def run() -> str:
    import torch

    from lorarffi.dsp.config import LoRaConfig
    from lorarffi.rffi.inference import load_classifier
    from lorarffi.rffi.preprocess import preprocess_preambles
    from lorarffi.sim import Session, make_fleet, simulate_preamble_set

    torch.set_num_threads(N_THREADS)
    cfg = LoRaConfig()
    ps = simulate_preamble_set(
        make_fleet(4, seed=1), cfg, BATCH // 4, session=Session(), rng=np.random.default_rng(0)
    )
    pre = preprocess_preambles(ps.preambles, cfg)  # what the detector hands out
    iq, cfo = pre.iq, pre.cfo_hz
    rows = []
    speeds: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (rep, (target_pps, target_p99)) in MODELS.items():
            clf = load_classifier(_model_dir(name, rep, cfg, tmp), torch_device="cpu")
            feats = torch.from_numpy(clf.features(iq[:1]))
            macs = count_macs(clf.model, feats)
            clf.classify(iq, cfo, track=False)  # warm-up
            heavy = macs > 1e8
            batch_t = _timed(lambda c=clf: c.classify(iq, cfo, track=False), MIN_TIME_S, 3 if heavy else 5)
            pps = BATCH / statistics.median(batch_t)
            x_all = torch.from_numpy(clf.features(iq))

            def model_only(x=x_all, m=clf.model):
                with torch.inference_mode():
                    m(x)

            model_t = _timed(model_only, MIN_TIME_S / 2, 3)
            model_pps = BATCH / statistics.median(model_t)
            n_calls = 30 if heavy else 200
            one = _timed(lambda c=clf: c.classify(iq[:1], cfo[:1], track=False), MIN_TIME_S, n_calls)
            lat = np.array(one) * 1e3
            p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
            ok = []
            if target_pps:
                ok.append(f"{'met' if pps >= target_pps else 'MISSED'} (>= {target_pps} pkt/s)")
            if target_p99:
                ok.append(f"{'met' if p99 <= target_p99 else 'MISSED'} (p99 <= {target_p99} ms)")
            speeds[name] = (pps, p99)
            rows.append(
                f"| {name} | {rep} | {sum(p.numel() for p in clf.model.parameters()) / 1e6:.2f} M | "
                f"{macs / 1e6:.1f} | {pps:,.0f} | {2 * macs * pps / 1e9:.1f} | {model_pps:,.0f} | "
                f"{2 * macs * model_pps / 1e9:.1f} | {p50:.2f} | {p99:.2f} | {'; '.join(ok) or '-'} |"
            )
    head = (
        "End to end through `load_classifier(...).classify(preambles, cfo_hz)` (representation + network + "
        f"CFO gate), CPU, `torch.set_num_threads({N_THREADS})`, batch {BATCH} for throughput, one packet per "
        "call for "
        f"latency; medians over >= {MIN_TIME_S:g} s. GFLOP/s = 2 x MAC x packets/s (network only). "
        '"network only" runs the model on precomputed features.\n\n'
        "Reproduce: `OMP_NUM_THREADS=2 .venv/bin/python benchmarks/run.py --only inference`\n\n"
        "| model | input | params | MMAC/packet | packets/s (end to end) | GFLOP/s | "
        "packets/s (network only) "
        "| GFLOP/s | latency p50 ms | latency p99 ms | targets |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    return head + "\n".join(rows) + "\n" + _default_model_section(speeds)


def _default_model_section(speeds: dict[str, tuple[float, float]]) -> str:
    """Accuracy under shift (read from the closed_set section of docs/benchmarks.md) next to the speed
    measured here."""
    import math
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
    text = doc.read_text() if doc.exists() else ""
    m = re.search(r"<!-- bench:closed_set -->(.*?)<!-- /bench:closed_set -->", text, re.S)
    title = r"### hybrid \(CNN \+ CFO gate\), single packet\n\n(.*?)\n\n"
    hybrid = re.search(title, m.group(1) if m else "", re.S)
    if not hybrid:
        return "\nDefault model: run `benchmarks/run.py --only closed_set` first for the accuracy side.\n"
    systems = {"default": "infocom_cnn_wide", "rffi_net_aug_rx": "rffi_net", "authors": "tifs_resnet"}
    # Size of each day-2 test set, from the rejected-packets table's "(of n)" cells (standard errors).
    n_test = max((int(n) for n in re.findall(r"\(of (\d+)\)", m.group(1))), default=0)
    lines = hybrid.group(1).splitlines()
    header = [c.strip() for c in lines[0].strip().strip("|").split("|")]
    low_col = header.index("low SNR")
    rows, models = [], []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] not in systems:
            continue
        name = systems[cells[0]]
        worst = cells[-1]  # "97.20% ((b) channel)": the lowest hybrid accuracy under any shift
        acc = float(worst.split("%")[0]) / 100
        pps, p99 = speeds[name]
        rows.append(
            f"| {name} ({cells[0]}) | {worst} | {cells[low_col]} | {cells[1]} | {pps:,.0f} | {p99:.2f} |"
        )
        models.append({"fast": pps >= 2000 and p99 <= 5.0, "acc": acc,
                       "train_s": float(cells[1].split()[0]), "name": name})
    if not rows:
        return ""
    # Among the fast models (else all): the most accurate under its worst shift, where a model within two
    # standard errors of the accuracy difference of the best one (binomial, n_test packets each) ties with it;
    # ties go to the shorter training run.
    pool = [mdl for mdl in models if mdl["fast"]] or models
    top = max(mdl["acc"] for mdl in pool)

    def ties_with_top(acc: float) -> bool:
        se = math.sqrt((top * (1 - top) + acc * (1 - acc)) / max(n_test, 1))
        return top - acc <= 2 * se

    tied = [mdl for mdl in pool if ties_with_top(mdl["acc"])]
    best_name = min(tied, key=lambda mdl: mdl["train_s"])["name"]
    return (
        "\n### Default model: accuracy and speed\n\n"
        "Accuracy and training time from the `closed_set` section (single packet, the hybrid's lowest "
        "accuracy under any shift, and at low SNR), speed from the table above.\n\n"
        "| model | worst-shift hybrid | low-SNR hybrid | train time | packets/s | p99 ms |\n"
        "|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\nRule: the most accurate model under its worst shift among those meeting the light-model "
        "speed targets (>= 2,000 packets/s, p99 <= 5 ms), else the most accurate; accuracies within two "
        f"standard errors of their difference (binomial, {n_test} packets each) are ties, which go to the "
        f"shorter training run: **{best_name}** on this run.\n"
    )


if __name__ == "__main__":
    print(run())
