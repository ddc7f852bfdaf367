# %% [markdown]
# # Quickstart: simulate a fleet, train a classifier, evaluate it
#
# The whole closed-set workflow in a few cells, on the built-in simulator: five look-alike SX1276 devices
# record their preambles on day 1 (training) and on day 2 at another place (test); a CNN on
# channel-independent spectrograms learns them, and the CFO-gated hybrid decides. The same steps on the
# command line are `lora-rffi simulate`, `lora-rffi train` and `lora-rffi evaluate` (README).
#
# **Small scale.** To run in well under a minute on a laptop CPU the fleet is tiny (5 devices, 100 training
# packets each) and training stops after 8 epochs; `lora-rffi train` with no options trains the benchmarked
# recipe (up to 60 epochs). The figures here are therefore small-scale ones; docs/benchmarks.md has the
# measured ones.

# %%
import pathlib
import tempfile

import numpy as np

from lorarffi.dsp import LoRaConfig
from lorarffi.rffi import plots
from lorarffi.rffi.preprocess import preprocess_preambles
from lorarffi.sim import Session, make_fleet, simulate_preamble_set

cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
fleet = make_fleet(5, seed=0, spread=3.0)  # spread 3: devices differ 3x more than the chip's typical spread
train_set = simulate_preamble_set(fleet, cfg, 100, session=Session(day=1), rng=np.random.default_rng(0))
test_set = simulate_preamble_set(
    fleet, cfg, 40, session=Session(day=2, place=2), rng=np.random.default_rng(1)
)
print(f"training: {train_set.preambles.shape}, test: {test_set.preambles.shape} (packets, samples)")
assert train_set.preambles.shape == (500, cfg.preamble_samples) and train_set.preambles.dtype == np.complex64
assert np.array_equal(np.bincount(test_set.device_ids), [0, 40, 40, 40, 40, 40])

# %% [markdown]
# ## What the model sees
# Each stored preamble is aligned but keeps its carrier frequency offset (CFO). Preprocessing estimates the
# CFO, removes it and normalises the power; the estimate is checked against the simulator's true CFO
# (the fine estimator is accurate to a few Hz at these SNRs: 20 Hz is a loose bound). Two devices'
# compensated preambles side by side: their spectrograms look alike, the difference is the fingerprint.

# %%
pre = preprocess_preambles(test_set.preambles, cfg, compensate=True)
cfo_error_hz = pre.cfo_hz - test_set.cfo_hz
print(
    f"CFO estimate error: median {np.median(np.abs(cfo_error_hz)):.2f} Hz, max {np.abs(cfo_error_hz).max():.2f} Hz"
)
assert np.abs(cfo_error_hz).max() < 20.0
first_of = {d: int(np.flatnonzero(test_set.device_ids == d)[0]) for d in (1, 2)}
fig = plots.spectrogram_pair_figure(
    pre.iq[[first_of[1], first_of[2]]],
    ["device 1", "device 2"],
    cfg,
    title="two devices' CFO-compensated preambles",
)
assert len(fig.axes[0].images) == 1 and not np.array_equal(
    fig.axes[0].images[0].get_array(), fig.axes[1].images[0].get_array()
)
fig

# %% [markdown]
# ## Train
# `train` writes a model directory: safetensors weights, a JSON config and the CFO gate's per-device
# statistics. The validation accuracy is on 10 % of the day-1 packets held out.

# %%
from lorarffi.rffi.train import TrainConfig, train

work = pathlib.Path(tempfile.mkdtemp(prefix="quickstart-"))
result = train(
    train_set.preambles,
    train_set.device_ids,
    cfg,
    work / "model",
    TrainConfig(epochs=8, max_time_s=None, seed=0),
)
print(
    f"{len(result.history)} epochs, best validation accuracy {result.best_val_acc:.3f} (epoch {result.best_epoch})"
)
assert {"config.json", "weights.safetensors"} <= {p.name for p in (work / "model").iterdir()}
assert result.best_val_acc >= 0.9

# %% [markdown]
# ## Evaluate on day 2
# Day 2 at another place: each device's CFO has moved by its day-to-day shift and the multipath channel is
# new. `evaluate` scores the CNN alone and the hybrid (the CNN's probabilities with devices whose CFO window
# excludes the packet ruled out, the rest weighted by how well the CFO fits). The accuracies are recomputed
# here from the per-packet decisions and the true labels, and the confusion matrix's rows hold each device's
# 40 packets. At the benchmark's scale (30 devices, the full recipe) the hybrid is ahead of the CNN under
# every shift (docs/benchmarks.md); with this tiny model either may come out ahead by a few packets.

# %%
from lorarffi.rffi.evaluate import evaluate
from lorarffi.rffi.inference import load_classifier

clf = load_classifier(work / "model")
scores, decision = evaluate(clf, test_set.preambles, test_set.device_ids)
print(
    f"CNN alone {100 * scores.accuracy_cnn:.1f} %, hybrid {100 * scores.accuracy_hybrid:.1f} %, "
    f"rejected as unknown: {scores.rejected}"
)
assert scores.accuracy_cnn == np.mean(decision.cnn_device_id == test_set.device_ids)
assert scores.accuracy_hybrid == np.mean(decision.device_id == test_set.device_ids)
assert np.array_equal(scores.confusion_hybrid.sum(axis=1), [40] * 5)
assert scores.accuracy_hybrid >= 0.9
fig = plots.confusion_figure(
    scores.confusion_hybrid,
    [str(d) for d in scores.device_ids],
    [str(d) for d in scores.device_ids] + ["unknown"],
    title=f"hybrid, day 2: accuracy {100 * scores.accuracy_hybrid:.1f} %",
)
assert sorted(int(t.get_text()) for t in fig.axes[0].texts) == sorted(
    scores.confusion_hybrid[scores.confusion_hybrid > 0]
)
fig

# %% [markdown]
# ## Each device's CFO against its gate window
# Day 2's packets, each device in its own panel on one shared scale: the CFO minus the device's gate
# centre, and the window the gate allows (the training range plus a 2.5 ppm margin). Every day-2 packet's
# true CFO lies inside its own device's window, which is why the gate never rejects a legitimate packet here.

# %%
fig = plots.cfo_per_device_figure(decision.cfo_hz, test_set.device_ids, decision.device_id, clf.gate)
k = np.searchsorted(clf.gate.device_ids, test_set.device_ids)
offset_hz = test_set.cfo_hz - clf.gate.receiver_offset_hz - clf.gate.center_hz[k]
assert np.all(np.abs(offset_hz) <= clf.gate.lambda_hz[k])
assert len(fig.axes) == 5
fig
