"""lorarffi.rffi.plots: every figure draws the numbers it is given (read back from the matplotlib artists)."""

from __future__ import annotations

import numpy as np
import pytest

from lorarffi.dsp import LoRaConfig, packet_waveform, spectrogram
from lorarffi.errors import ConfigError
from lorarffi.rffi import plots
from lorarffi.rffi.hybrid import CfoGate, GateParams
from lorarffi.rffi.rogue import plot_roc, rogue_figures


def _cell_texts(ax) -> dict[tuple[int, int], str]:
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}


def test_confusion_figure_writes_every_nonzero_count_in_its_cell_and_has_a_colour_bar() -> None:
    conf = np.array([[5, 1, 0], [0, 7, 2]])
    fig = plots.confusion_figure(conf, ["1", "2"], ["1", "2", "unknown"], title="t")
    ax, cbar = fig.axes  # the matrix and its colour bar
    assert _cell_texts(ax) == {(0, 0): "5", (0, 1): "1", (1, 1): "7", (1, 2): "2"}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "unknown"]
    share = ax.images[0].get_array()
    np.testing.assert_array_equal(share, conf / conf.sum(axis=1, keepdims=True))  # same division
    assert cbar.get_ylabel().startswith("share")
    with pytest.raises(ConfigError, match="shape"):
        plots.confusion_figure(conf, ["1", "2", "3"])


def _gate() -> CfoGate:
    return CfoGate.fit([100.0, 120.0, 5000.0, 5040.0], [0, 0, 1, 1], [3, 7], GateParams(margin_hz=200.0))


def test_cfo_per_device_figure_has_one_panel_per_device_one_y_scale_and_each_gate_window() -> None:
    gate = _gate()
    gate.receiver_offset_hz = 40.0  # another receiver: every window moves by it
    cfo = np.array([110.0, 130.0, 5020.0, 9000.0, -400.0, -380.0, 5010.0]) + 40.0
    truth = np.array([3, 3, 7, 7, 9, 9, 7])
    decided = np.array([3, 7, 7, -1, -1, -1, 7])
    fig = plots.cfo_per_device_figure(cfo, truth, decided, gate)
    axes = fig.axes
    assert len(axes) == 3  # devices 3, 7, 9: five columns would leave two empty panels, none is left
    assert len({ax.get_ylim() for ax in axes}) == 1
    for ax, k in zip(axes[:2], range(2), strict=True):
        (band,) = ax.patches
        lam = gate.lambda_hz[k]  # the window is y in [-lam, lam] (a rectangle in data units along y)
        assert band.get_y() == -lam and band.get_y() + band.get_height() == pytest.approx(lam, rel=1e-15)
    right, wrong = axes[1].lines[1:]  # after the centre line: packets decided right, then the others
    centre = gate.center_hz[1] + gate.receiver_offset_hz
    assert centre == gate.center_hz[1] + 40.0
    np.testing.assert_array_equal(right.get_ydata(), np.array([5060.0, 5050.0]) - centre)
    np.testing.assert_array_equal(wrong.get_ydata(), [9040.0 - centre])
    assert not axes[2].patches  # device 9 is not in the gate: no window, drawn around its median
    right, wrong = axes[2].lines  # no centre line; both packets rejected, around their median
    assert right.get_ydata().size == 0
    np.testing.assert_array_equal(wrong.get_ydata(), [-10.0, 10.0])  # -360 and -340 around -350
    assert fig.get_suptitle()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "gate window",
        "decided right",
        "decided wrong or rejected",
    ]


def test_roc_figure_marks_the_operating_point_at_the_requested_far() -> None:
    rng = np.random.default_rng(0)
    f = rogue_figures(rng.standard_normal(2000), 2.0 + rng.standard_normal(1000), far=0.0125)
    fig = plots.roc_figure({"k-NN": f})
    ax = fig.axes[0]
    curve, point, eer = ax.lines
    assert point.get_xdata()[0] == pytest.approx(f.frr) and point.get_ydata()[0] == 1.0 - f.far_measured
    assert f.far_measured < f.far  # 12 of 1000 rogue packets accepted at most: the point is the measured FAR
    assert eer.get_xdata()[0] == pytest.approx(f.eer) and eer.get_ydata()[0] == pytest.approx(1.0 - f.eer)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("operating point (FAR 1.25 %)" in s and f"FRR {100 * f.frr:.2f} %" in s for s in labels)
    np.testing.assert_array_equal(curve.get_ydata(), 1.0 - f.far_curve)


def test_plot_roc_writes_a_png(tmp_path) -> None:
    f = rogue_figures([0.0, 1.0, 2.0], [3.0, 4.0, 1.5])
    path = plot_roc(f, tmp_path / "sub" / "roc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_few_shot_figure_draws_each_curve_in_percent() -> None:
    fig = plots.few_shot_figure({"a": {5: 0.5, 1: 0.25, 20: 1.0}, "b": {1: 0.1}}, target=0.95)
    ax = fig.axes[0]
    a, b, target = ax.lines
    np.testing.assert_array_equal(a.get_xdata(), [1, 5, 20])
    np.testing.assert_array_equal(a.get_ydata(), [25.0, 50.0, 100.0])
    assert list(b.get_ydata()) == [10.0] and list(target.get_ydata()) == [95.0, 95.0]
    with pytest.raises(ConfigError):
        plots.few_shot_figure({"a": {}})


def test_cfo_drift_figure_draws_each_device_relative_to_its_first_packet_in_time_order() -> None:
    t = np.array([30.0, 0.0, 10.0, 0.0, 600.0])
    cfo = np.array([900.0, 1000.0, 950.0, -50.0, -80.0])
    ids = np.array([1, 1, 1, 2, 2])
    ax = plots.cfo_drift_figure(t, cfo, ids).axes[0]
    one, two = ax.lines[:2]
    np.testing.assert_array_equal(one.get_xdata(), np.array([0.0, 10.0, 30.0]) / 60.0)  # 600 s span: minutes
    np.testing.assert_array_equal(one.get_ydata(), [0.0, -50.0, -100.0])
    np.testing.assert_array_equal(two.get_ydata(), [0.0, -30.0])


def test_spectrogram_pair_figure_shows_both_spectrograms_on_one_scale_and_their_difference() -> None:
    cfg = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
    a = packet_waveform(cfg, cfo_hz=0.0)[: cfg.preamble_samples]
    b = packet_waveform(cfg, cfo_hz=20e3)[: cfg.preamble_samples]
    fig = plots.spectrogram_pair_figure(np.stack([a, b]), ["a", "b"], cfg)
    left, right, diff = (ax.images[0] for ax in fig.axes[:3])
    band = np.abs((np.arange(256) - 128) * cfg.fs_hz / 256) <= cfg.bw_hz
    expect = 10.0 * spectrogram(np.stack([a, b]), n_fft=256, hop=64, crop=None)[:, band]
    np.testing.assert_array_equal(left.get_array(), expect[0])
    np.testing.assert_array_equal(right.get_array(), expect[1])
    np.testing.assert_array_equal(diff.get_array(), expect[1] - expect[0])
    assert left.get_clim() == right.get_clim()
    assert not np.array_equal(left.get_array(), right.get_array())  # a 20 kHz shift shows
    with pytest.raises(ConfigError, match="two"):
        plots.spectrogram_pair_figure(np.stack([a, b, a]), ["a", "b", "c"], cfg)


def test_cfo_per_device_figure_leaves_no_empty_panel_in_its_grid() -> None:
    truth = np.repeat(np.arange(1, 8), 2)  # 7 devices: a 2 x 4 grid with one cell left over
    cfo = truth * 1000.0
    fig = plots.cfo_per_device_figure(cfo, truth, truth, None)
    assert len(fig.axes) == 7 and all(ax.lines for ax in fig.axes)


def test_confusion_figure_of_30_devices_keeps_the_counts_and_grows_with_them() -> None:
    conf = np.eye(30, 31, dtype=np.int64) * 97
    conf[3, 30] = 3  # three packets of device 4 rejected
    labels = [str(d) for d in range(1, 31)]
    fig = plots.confusion_figure(conf, labels, [*labels, "unknown"])
    assert len(fig.axes[0].texts) == 31 and _cell_texts(fig.axes[0])[(3, 30)] == "3"
    width_in, height_in = fig.get_size_inches()
    assert width_in >= 0.35 * 31 and height_in >= 0.35 * 30  # a third of an inch per cell at least
