"""Figures of lora-rffi's results, as matplotlib Figures (no pyplot state, no display needed).

Confusion matrices with counts and a colour bar, each device's CFO against its gate window, the ROC of rogue
detection with its operating point and EER, the few-shot enrollment curve, per-device CFO drift over time and
the spectrograms of two devices side by side. :func:`save_figure` writes any of them as a PNG. Callers
(``lora-rffi evaluate --plots``, ``lora-rffi rogue --plots``, the notebooks, the benchmarks) only choose what
to draw.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from lorarffi.dsp.config import LoRaConfig
from lorarffi.dsp.spectrogram import spectrogram
from lorarffi.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lorarffi.rffi.hybrid import CfoGate
    from lorarffi.rffi.rogue import RogueFigures

__all__ = [
    "confusion_figure",
    "cfo_per_device_figure",
    "roc_figure",
    "few_shot_figure",
    "cfo_drift_figure",
    "spectrogram_pair_figure",
    "save_figure",
]

_MIN_FRR = 1e-4  # the ROC's log-scaled FRR axis starts here (a curve at FRR 0 is drawn on this edge)


def _figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 100) -> pathlib.Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders created; through a temporary name, so an interrupted
    run leaves no partial image) and return the path."""
    from lorarffi.datasets.atomic import atomic_path

    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:  # a whole PNG or none
        fig.savefig(tmp, dpi=dpi, format="png")
    return out


def confusion_figure(
    confusion: npt.ArrayLike,
    row_labels: Sequence[str],
    col_labels: Sequence[str] | None = None,
    *,
    title: str = "",
) -> Figure:
    """A confusion matrix: colour = share of the true device's packets, the count written in every cell.

    Parameters
    ----------
    confusion : array_like of int, shape (K, C)
        Packet counts, rows = true device, columns = decision (C >= K: extra columns such as ``unknown``).
    row_labels : sequence of str, length K
        True-device labels.
    col_labels : sequence of str, length C, optional
        Decision labels (default ``row_labels``).
    title : str
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes with the matrix and a colour bar (row share, 0 to 1).
    """
    conf = np.asarray(confusion, dtype=np.int64)
    cols = list(row_labels if col_labels is None else col_labels)
    if conf.ndim != 2 or conf.shape != (len(row_labels), len(cols)):
        raise ConfigError(
            f"confusion has shape {conf.shape}, expected ({len(row_labels)}, {len(cols)}) from the labels"
        )
    k, c = conf.shape
    share = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    cell_in = 0.45 if max(k, c) <= 20 else 0.35  # inches per cell: room for a 3-digit count
    fig = _figure(max(5.2, 2.0 + cell_in * c), max(3.6, 1.4 + cell_in * k))
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    fontsize = 8 if max(k, c) <= 12 else 6 if max(k, c) <= 40 else 0  # beyond 40 columns: colour only
    if fontsize:
        for (i, j), n in np.ndenumerate(conf):
            if n:
                colour = "white" if share[i, j] > 0.6 else "black"
                ax.text(j, i, str(n), ha="center", va="center", fontsize=fontsize, color=colour)
    tick_size = 8 if max(k, c) <= 40 else 6
    ax.set_xticks(range(c), cols, rotation=90 if max(len(s) for s in cols) > 3 else 0, fontsize=tick_size)
    ax.set_yticks(range(k), list(row_labels), fontsize=tick_size)
    ax.set_xlabel("decision")
    ax.set_ylabel("true device")
    if title:
        ax.set_title(title, fontsize=9, wrap=True)
    fig.colorbar(im, ax=ax, label="share of the true device's packets", shrink=0.9)
    return fig


def _grid(n: int, max_cols: int = 5) -> tuple[int, int]:
    """Rows and columns for ``n`` panels: at most ``max_cols`` columns, rows as even as possible."""
    n_rows = -(-n // max_cols)
    return n_rows, -(-n // n_rows)


def cfo_per_device_figure(
    cfo_hz: npt.ArrayLike,
    true_ids: npt.ArrayLike,
    decided_ids: npt.ArrayLike,
    gate: CfoGate | None,
    *,
    title: str = "CFO of each device's packets against its gate window",
) -> Figure:
    """Each device's packets in file order: CFO relative to the device's gate centre, on one shared y-scale.

    A device the gate knows is drawn against ``cfo - receiver offset - centre`` with its window ``±lambda``
    shaded; a device it does not know against its own median CFO (no window). Packets the decision gave to
    the true device are blue, others red. Only devices present in ``true_ids`` get a panel, and no panel is
    left empty.

    Parameters
    ----------
    cfo_hz : array_like of float, shape (N,)
        CFO estimate of every packet, Hz.
    true_ids, decided_ids : array_like of int, shape (N,)
        True device and the decision (-1 = rejected) of every packet.
    gate : CfoGate or None
        The classifier's CFO gate (None: no windows drawn).
    title : str
        Figure title.
    """
    cfo = np.asarray(cfo_hz, dtype=np.float64).reshape(-1)
    truth = np.asarray(true_ids, dtype=np.int64).reshape(-1)
    decided = np.asarray(decided_ids, dtype=np.int64).reshape(-1)
    if not cfo.size == truth.size == decided.size:
        raise ConfigError(
            f"{cfo.size} CFOs, {truth.size} true ids and {decided.size} decisions: need one each"
        )
    if not cfo.size:
        raise ConfigError("no packets to plot")
    devices = np.unique(truth)
    gate_ids = [] if gate is None else gate.device_ids.tolist()
    n_rows, n_cols = _grid(devices.size)
    fig = _figure(2.6 * n_cols + 0.6, 2.1 * n_rows + 0.8)
    axes = fig.subplots(n_rows, n_cols, sharey=True, squeeze=False).ravel()
    for ax in axes[devices.size :]:
        fig.delaxes(ax)
    for ax, dev in zip(axes, devices.tolist(), strict=False):
        rows = np.flatnonzero(truth == dev)
        if dev in gate_ids:
            k = gate_ids.index(dev)
            centre = float(gate.center_hz[k] + gate.receiver_offset_hz)
            lam = float(gate.lambda_hz[k])
            ax.axhspan(-lam, lam, color="0.85", zorder=0, label="gate window")
            ax.axhline(0.0, color="0.5", lw=0.6, zorder=0)
            name = f"device {dev}\ncentre {centre / 1e3:+.2f} kHz, window ±{lam:.0f} Hz"
        else:
            centre = float(np.median(cfo[rows]))
            name = f"device {dev} (not in the gate)\nmedian {centre / 1e3:+.2f} kHz"
        rel = cfo[rows] - centre
        ok = decided[rows] == dev
        x = np.arange(rows.size)
        ax.plot(x[ok], rel[ok], ".", ms=3, color="tab:blue", label="decided right")
        ax.plot(x[~ok], rel[~ok], "x", ms=4, color="tab:red", label="decided wrong or rejected")
        ax.set_title(name, fontsize=7)
        ax.tick_params(labelsize=7)
    handles, labels = [], []
    for ax in axes[: devices.size]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.supxlabel("packet of the device (file order)", fontsize=9)
    fig.supylabel("CFO minus the device's gate centre (Hz)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def roc_figure(
    figures: RogueFigures | Mapping[str, RogueFigures],
    *,
    title: str = "rogue detection",
) -> Figure:
    """The ROC of rogue detection (``1 - FAR`` against ``FRR``, log FRR axis), each curve's operating point
    (the threshold chosen for its FAR, :class:`~lorarffi.rffi.rogue.RogueFigures`) and its EER marked.

    Parameters
    ----------
    figures : RogueFigures or mapping of label to RogueFigures
        One result, or several labelled ones drawn together.
    title : str
        Figure title.
    """
    curves = dict(figures) if isinstance(figures, Mapping) else {"": figures}
    fig = _figure(5.4, 4.4)
    ax = fig.subplots()
    for label, f in curves.items():
        name = f"{label}: " if label else ""
        (line,) = ax.plot(
            np.maximum(f.frr_curve, _MIN_FRR),
            1.0 - f.far_curve,
            lw=1.4,
            label=f"{name}AUC {f.auc:.4f}, EER {100 * f.eer:.2f} %",
        )
        ax.plot(
            max(f.frr, _MIN_FRR),
            1.0 - f.far_measured,
            "o",
            ms=7,
            mfc="none",
            color=line.get_color(),
            label=f"{name}operating point (FAR {100 * f.far:g} %): FRR {100 * f.frr:.2f} %, "
            f"caught {100 * (1 - f.far_measured):.1f} %",
        )
        ax.plot(max(f.eer, _MIN_FRR), 1.0 - f.eer, "d", ms=5, color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlim(_MIN_FRR, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("legitimate packets called rogue (FRR)")
    ax.set_ylabel("rogue packets caught (1 - FAR)")
    ax.set_title(f"{title} (diamond: EER)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=6.5)
    return fig


def few_shot_figure(
    accuracy: Mapping[str, Mapping[int, float]],
    *,
    target: float | None = None,
    title: str = "few-shot enrollment",
    ylabel: str = "test packets of enrolled devices identified (%)",
) -> Figure:
    """Accuracy against packets enrolled per device, one line per system.

    Parameters
    ----------
    accuracy : mapping of label to {packets enrolled per device: accuracy as a fraction in [0, 1]}
        One curve per label.
    target : float, optional
        A target accuracy (fraction) drawn as a dotted line.
    title, ylabel : str
        Figure title and y-axis label.
    """
    if not accuracy or not all(accuracy.values()):
        raise ConfigError("few_shot_figure needs at least one curve with at least one point")
    fig = _figure(5.4, 3.8)
    ax = fig.subplots()
    shots = sorted({int(n) for rows in accuracy.values() for n in rows})
    markers = "os^vD<>"
    for i, (label, rows) in enumerate(accuracy.items()):
        ns = sorted(rows)
        ax.plot(ns, [100 * rows[n] for n in ns], f"{markers[i % len(markers)]}-", label=label)
    if target is not None:
        ax.axhline(100 * target, color="gray", lw=0.8, ls=":", label=f"target {100 * target:g} %")
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(n) for n in shots])
    ax.minorticks_off()
    ax.set_xlabel("packets enrolled per device")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_ylim(0, 101)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def cfo_drift_figure(
    time_s: npt.ArrayLike,
    cfo_hz: npt.ArrayLike,
    device_ids: npt.ArrayLike,
    *,
    title: str = "CFO drift of each device",
) -> Figure:
    """Each device's CFO over time, relative to its first packet's, one line per device on one axes.

    Parameters
    ----------
    time_s : array_like of float, shape (N,)
        Time of every packet, s (any origin: since power-on, or since the recording started).
    cfo_hz : array_like of float, shape (N,)
        CFO of every packet, Hz.
    device_ids : array_like of int, shape (N,)
        Device of every packet.
    title : str
        Figure title.
    """
    t = np.asarray(time_s, dtype=np.float64).reshape(-1)
    cfo = np.asarray(cfo_hz, dtype=np.float64).reshape(-1)
    ids = np.asarray(device_ids, dtype=np.int64).reshape(-1)
    if not t.size == cfo.size == ids.size or not t.size:
        raise ConfigError(
            f"{t.size} times, {cfo.size} CFOs and {ids.size} device ids: need one each, at least one"
        )
    minutes = t.max() - t.min() > 300.0
    fig = _figure(6.4, 3.8)
    ax = fig.subplots()
    for dev in np.unique(ids).tolist():
        rows = np.flatnonzero(ids == dev)
        rows = rows[np.argsort(t[rows], kind="stable")]
        x = t[rows] / 60.0 if minutes else t[rows]
        ax.plot(
            x,
            cfo[rows] - cfo[rows[0]],
            ".-",
            lw=0.8,
            ms=2,
            label=f"device {dev} ({cfo[rows[0]] / 1e3:+.2f} kHz)",
        )
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_xlabel("time (min)" if minutes else "time (s)")
    ax.set_ylabel("CFO minus the first packet's (Hz)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncols=2 if np.unique(ids).size > 6 else 1, title="first CFO", title_fontsize=7)
    return fig


def spectrogram_pair_figure(
    preambles: npt.ArrayLike,
    labels: Sequence[str],
    cfg: LoRaConfig,
    *,
    n_fft: int = 256,
    hop: int = 64,
    title: str = "",
) -> Figure:
    """Spectrograms of two preambles side by side on one colour scale, and their difference.

    Parameters
    ----------
    preambles : array_like of complex64, shape (2, L)
        Two aligned preambles sampled at ``cfg.fs_hz`` (e.g. CFO compensated, of two devices).
    labels : sequence of str, length 2
        A title for each.
    cfg : LoRaConfig
        Gives the sample rate and bandwidth: the band +-``bw_hz`` is drawn, axes in kHz and ms.
    n_fft, hop : int
        STFT frame and hop, samples.
    title : str
        Figure title.
    """
    iq = np.asarray(preambles, dtype=np.complex64)
    if iq.ndim != 2 or iq.shape[0] != 2 or len(labels) != 2:
        raise ConfigError(f"preambles has shape {iq.shape} with {len(labels)} labels: give two of each")
    f_hz = (np.arange(n_fft) - n_fft // 2) * cfg.fs_hz / n_fft
    band = np.abs(f_hz) <= min(cfg.bw_hz, cfg.fs_hz / 2)
    spec_db = 10.0 * np.asarray(spectrogram(iq, n_fft=n_fft, hop=hop, crop=None))[:, band]
    n_frames = spec_db.shape[2]
    extent = (0.0, n_frames * hop / cfg.fs_hz * 1e3, f_hz[band][0] / 1e3, f_hz[band][-1] / 1e3)
    top = float(spec_db.max())
    fig = _figure(11.0, 3.4)
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    kw = {"origin": "lower", "aspect": "auto", "extent": extent}
    for ax, spec, label in zip(axes[:2], spec_db, labels, strict=True):
        im = ax.imshow(spec, vmin=top - 50.0, vmax=top, cmap="viridis", **kw)
        ax.set_title(label, fontsize=9)
    fig.colorbar(im, ax=axes[:2], label="power (dB)", shrink=0.9)
    diff = spec_db[1] - spec_db[0]
    lim = max(float(np.percentile(np.abs(diff), 99)), 1e-3)
    im = axes[2].imshow(diff, vmin=-lim, vmax=lim, cmap="RdBu_r", **kw)
    axes[2].set_title(f"{labels[1]} minus {labels[0]}", fontsize=9)
    fig.colorbar(im, ax=axes[2], label="dB", shrink=0.9)
    axes[0].set_ylabel("frequency (kHz)")
    for ax in axes:
        ax.set_xlabel("time (ms)")
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
