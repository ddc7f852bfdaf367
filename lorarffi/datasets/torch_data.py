"""Torch training data: a ``Dataset`` over a preamble file, per-batch augmentation, sorted-batch sampling.

The data flow: :class:`SortedBatchSampler` yields :class:`BatchRequest` s (sorted row indices plus a seed);
:class:`PreambleDataset` reads those rows in one HDF5 read (sorted indices read in runs), applies an
:class:`Augmentation` to the whole batch at once (vectorised numpy, :mod:`lorarffi.sim.channel`) and
returns complex64 IQ and int64 labels as tensors. :func:`make_loader` wires them into a ``DataLoader`` with
``batch_size=None`` (the sampler already makes batches). Worker processes each open the file themselves (the
:class:`~lorarffi.datasets.native.PreambleFile` is pickled as a path), so no file is copied into memory.

Augmentation randomness comes from the batch's seed, which the sampler draws from its own generator: a
given ``(seed, epoch)`` gives the same batches whatever the number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lorarffi.datasets.native import PreambleFile, open_preamble_file
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError
from lorarffi.sim import channel

__all__ = [
    "Augmentation",
    "augment_batch",
    "BatchRequest",
    "PreambleDataset",
    "SortedBatchSampler",
    "make_loader",
]


def _range(value: tuple[float, float] | None, name: str, lo: float = -np.inf) -> tuple[float, float] | None:
    if value is None:
        return None
    a, b = (float(v) for v in value)
    if not (np.isfinite(a) and np.isfinite(b)) or b < a or a < lo:
        raise ConfigError(f"{name}={value!r} is not valid: use (low, high) with {lo:g} <= low <= high")
    return a, b


@dataclass(frozen=True)
class Augmentation:
    """On-the-fly augmentation drawn per packet, applied per batch. ``None`` turns a step off.

    Steps in order: multipath/Doppler (Shen et al. 2022 Table I ranges by default), CFO shift, timing shift,
    AWGN. The defaults follow the authors' online AWGN (Shen et al. 2023: SNR U(0, 39) dB, per batch) and
    channel augmentation (paper_notes §9.4).

    Parameters
    ----------
    snr_db : (low, high) or None
        In-band SNR of the added noise in dB, relative to each packet's mean power (the stored packet's own
        noise stays, so the result is at most this SNR).
    multipath_probability : float
        Fraction of packets passed through a random Rician multipath channel (0 = off).
    rms_delay_spread_s, k_factor, doppler_hz : (low, high)
        Uniform ranges of the channel draws (s, linear, Hz).
    cfo_shift_hz : (low, high) or None
        Extra carrier offset in Hz.
    timing_shift_samples : (low, high) or None
        Fractional delay of the window in samples (band-limited; edges from the periodic preamble).
    """

    snr_db: tuple[float, float] | None = (0.0, 39.0)
    multipath_probability: float = 0.5
    rms_delay_spread_s: tuple[float, float] = (10e-9, 300e-9)
    k_factor: tuple[float, float] = (0.0, 10.0)
    doppler_hz: tuple[float, float] = (0.0, 10.0)
    cfo_shift_hz: tuple[float, float] | None = (-200.0, 200.0)
    timing_shift_samples: tuple[float, float] | None = (-2.0, 2.0)

    def __post_init__(self) -> None:
        _range(self.snr_db, "snr_db")
        _range(self.rms_delay_spread_s, "rms_delay_spread_s", 0.0)
        _range(self.k_factor, "k_factor", 0.0)
        _range(self.doppler_hz, "doppler_hz", 0.0)
        _range(self.cfo_shift_hz, "cfo_shift_hz")
        _range(self.timing_shift_samples, "timing_shift_samples")
        if not 0.0 <= self.multipath_probability <= 1.0:
            raise ConfigError(
                f"multipath_probability={self.multipath_probability!r} is not valid: use 0 to 1"
            )


def augment_batch(
    iq: npt.NDArray[np.complex64], aug: Augmentation, cfg: LoRaConfig, *, rng: np.random.Generator
) -> npt.NDArray[np.complex64]:
    """Apply ``aug`` to a batch of aligned preambles, each packet with its own random draw.

    Parameters
    ----------
    iq : ndarray of complex64, shape (N, L)
    aug : Augmentation
    cfg : LoRaConfig
        Sample rate and bandwidth (in-band SNR, CFO, the preamble period for timing shifts).
    rng : numpy.random.Generator

    Returns
    -------
    iq : ndarray of complex64, shape (N, L)
    """
    x = np.atleast_2d(np.asarray(iq, dtype=np.complex64))
    n = x.shape[0]
    if aug.multipath_probability > 0 and n:
        rows = np.flatnonzero(rng.random(n) < aug.multipath_probability)
        if rows.size:
            ch = channel.draw_multipath(
                rows.size,
                rms_delay_spread_s=rng.uniform(*aug.rms_delay_spread_s, rows.size),
                k_factor=rng.uniform(*aug.k_factor, rows.size),
                doppler_hz=rng.uniform(*aug.doppler_hz, rows.size),
                rng=rng,
            )
            x = x.copy()
            x[rows] = channel.apply_multipath(x[rows], ch, fs_hz=cfg.fs_hz, t0_s=0.0)
    if aug.cfo_shift_hz is not None:
        x = channel.frequency_shift(x, rng.uniform(*aug.cfo_shift_hz, n), fs_hz=cfg.fs_hz)
    if aug.timing_shift_samples is not None:
        period = cfg.samples_per_symbol if x.shape[1] > cfg.samples_per_symbol else None
        x = channel.timing_shift(x, rng.uniform(*aug.timing_shift_samples, n), period_samples=period)
    if aug.snr_db is not None:
        x = channel.add_awgn(
            x, rng.uniform(*aug.snr_db, n), reference="in_band", rng=rng, bw_hz=cfg.bw_hz, fs_hz=cfg.fs_hz
        )
    return x


@dataclass(frozen=True)
class BatchRequest:
    """Rows to read as one batch (sorted, for efficient HDF5 reads) and the seed of its augmentation."""

    rows: tuple[int, ...]
    seed: int


class PreambleDataset:
    """A torch map-style dataset over a preamble file (ours or the public layout), batch-indexed.

    ``dataset[BatchRequest]`` (what :class:`SortedBatchSampler` yields) reads the rows at once and augments
    them together; ``dataset[i]`` gives one packet (unaugmented unless a seed comes with a BatchRequest).

    Parameters
    ----------
    path : path-like
        The HDF5 preamble file.
    devices : iterable of int, optional
        Device ids to use (default: all in the file).
    packets : slice or sequence of int, optional
        Per-device packet indices (as :meth:`PreambleFile.select`).
    augmentation : Augmentation, optional
    cfg : LoRaConfig, optional
        LoRa parameters, needed when the file does not state them (public files).

    Attributes
    ----------
    rows : ndarray of int64
        File rows this dataset uses, sorted; dataset index ``i`` is file row ``rows[i]``.
    classes : ndarray of int64
        Device ids in label order: label ``k`` is device ``classes[k]``.
    labels : ndarray of int64
        Label of every dataset index.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        devices: Iterable[int] | None = None,
        packets: Any = None,
        augmentation: Augmentation | None = None,
        cfg: LoRaConfig | None = None,
    ) -> None:
        self._file: PreambleFile = open_preamble_file(path)
        self.cfg = cfg or self._file.cfg
        if self.cfg is None:
            raise ConfigError(f"{path} does not state its LoRa parameters: pass cfg=LoRaConfig(...)")
        self.augmentation = augmentation
        self.rows = np.asarray(self._file.select(devices, packets), dtype=np.int64)
        ids = self._file.device_ids[self.rows]
        self.classes = np.unique(ids)
        self.labels = np.searchsorted(self.classes, ids).astype(np.int64)
        self._file.close()  # workers re-open it

    def __len__(self) -> int:
        return int(self.rows.size)

    def read(
        self, indices: Sequence[int], *, seed: int | None = None
    ) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.int64]]:
        """IQ (complex64, (B, L)) and labels (int64, (B,)) of ``indices``, augmented when ``seed`` is set."""
        idx = np.asarray(indices, dtype=np.int64)
        iq = self._file.read_rows(self.rows[idx])
        if self.augmentation is not None and seed is not None:
            iq = augment_batch(iq, self.augmentation, self.cfg, rng=np.random.default_rng(seed))
        return iq.astype(np.complex64, copy=False), self.labels[idx]

    def __getitem__(self, item: int | BatchRequest) -> tuple[Any, Any]:
        import torch

        if isinstance(item, BatchRequest):
            iq, labels = self.read(item.rows, seed=item.seed)
            return torch.from_numpy(np.ascontiguousarray(iq)), torch.from_numpy(labels)
        iq, labels = self.read([int(item)])
        return torch.from_numpy(iq[0]), torch.tensor(int(labels[0]))


class SortedBatchSampler:
    """Shuffled batches of sorted dataset indices, each with an augmentation seed.

    Each epoch permutes the indices (from ``seed`` and the epoch), cuts them into batches of ``batch_size``
    and sorts each batch, so every batch is one HDF5 read in row order. Call :meth:`set_epoch` between epochs.

    Parameters
    ----------
    n_items : int
        Dataset length.
    batch_size : int
    seed : int
    shuffle : bool
    drop_last : bool
    """

    def __init__(
        self, n_items: int, batch_size: int, *, seed: int = 0, shuffle: bool = True, drop_last: bool = False
    ) -> None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size={batch_size!r} is not valid: use >= 1")
        self.n_items = int(n_items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (a different permutation and different augmentation seeds)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        full, rest = divmod(self.n_items, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[BatchRequest]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n_items) if self.shuffle else np.arange(self.n_items)
        seeds = rng.integers(0, 2**63 - 1, len(self))
        for b in range(len(self)):
            chunk = np.sort(order[b * self.batch_size : (b + 1) * self.batch_size])
            yield BatchRequest(tuple(int(i) for i in chunk), int(seeds[b]))


def make_loader(
    dataset: PreambleDataset,
    *,
    batch_size: int = 32,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
    **kwargs: Any,
) -> Any:
    """A ``torch.utils.data.DataLoader`` of ``(iq complex64 (B, L), labels int64 (B,))`` batches.

    Parameters
    ----------
    dataset : PreambleDataset
    batch_size, seed, shuffle, drop_last
        Passed to :class:`SortedBatchSampler` (reachable as ``loader.sampler`` for ``set_epoch``).
    num_workers : int
        Worker processes; each opens the file itself.
    **kwargs
        More ``DataLoader`` options (``pin_memory``, ``persistent_workers``, ``prefetch_factor``...).
    """
    from torch.utils.data import DataLoader

    sampler = SortedBatchSampler(len(dataset), batch_size, seed=seed, shuffle=shuffle, drop_last=drop_last)
    return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=num_workers, **kwargs)
