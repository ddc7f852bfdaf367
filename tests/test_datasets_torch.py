"""The torch training-data pipeline: a Dataset over a preamble file, sorted batches, per-batch augmentation,
worker processes that reopen the file."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lorarffi.datasets.native import PreambleWriter, open_preamble_file  # noqa: E402
from lorarffi.datasets.torch_data import (  # noqa: E402
    Augmentation,
    BatchRequest,
    PreambleDataset,
    SortedBatchSampler,
    augment_batch,
    make_loader,
)
from lorarffi.dsp import LoRaConfig, packet_waveform  # noqa: E402
from lorarffi.errors import ConfigError  # noqa: E402
from lorarffi.sim import Session, make_fleet, simulate_preamble_set  # noqa: E402

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)


@pytest.fixture(scope="module")
def h5_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("torch") / "sim.h5"
    ps = simulate_preamble_set(
        make_fleet(3, seed=1, first_device=2), CFG, 12, session=Session(), rng=np.random.default_rng(0)
    )
    with PreambleWriter(path, CFG, source="test") as w:
        w.append(ps.preambles, ps.device_ids, cfo_hz=ps.cfo_hz, snr_db=ps.snr_db)
    return path, ps


def test_dataset_without_augmentation_returns_the_file_rows_and_labels(h5_file):
    path, ps = h5_file
    ds = PreambleDataset(path, devices=[2, 4], packets=slice(0, 5))
    assert len(ds) == 10
    np.testing.assert_array_equal(ds.classes, [2, 4])
    iq, labels = ds[BatchRequest(tuple(range(10)), seed=0)]
    assert iq.dtype == torch.complex64 and iq.shape == (10, 8192) and labels.dtype == torch.int64
    expected_rows = np.r_[0:5, 24:29]
    np.testing.assert_array_equal(iq.numpy(), ps.preambles[expected_rows])
    np.testing.assert_array_equal(labels.numpy(), [0] * 5 + [1] * 5)
    x, y = ds[7]
    np.testing.assert_array_equal(x.numpy(), ps.preambles[26])
    assert int(y) == 1


def test_sampler_yields_sorted_batches_covering_each_index_once():
    s = SortedBatchSampler(23, 5, seed=3)
    batches = list(s)
    assert len(batches) == len(s) == 5
    assert all(list(b.rows) == sorted(b.rows) for b in batches)
    assert sorted(i for b in batches for i in b.rows) == list(range(23))
    s.set_epoch(1)
    assert [b.rows for b in s] != [b.rows for b in batches]
    assert len(SortedBatchSampler(23, 5, drop_last=True)) == 4
    with pytest.raises(ConfigError, match="batch_size="):
        SortedBatchSampler(10, 0)


def test_loader_with_workers_gives_the_same_augmented_batches(h5_file):
    path, _ = h5_file
    ds = PreambleDataset(path, augmentation=Augmentation())
    assert len(pickle.dumps(ds)) < 50_000  # workers get the path, not the data
    single = [(x.clone(), y.clone()) for x, y in make_loader(ds, batch_size=8, seed=5)]
    multi = list(make_loader(ds, batch_size=8, seed=5, num_workers=2))
    assert len(single) == len(multi) == 5
    for (xa, ya), (xb, yb) in zip(single, multi, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # augmentation really changes the data, and another seed changes it differently
    plain = PreambleDataset(path)
    first = single[0]
    rows = next(iter(SortedBatchSampler(len(ds), 8, seed=5))).rows
    raw, _ = plain.read(rows)
    assert not np.allclose(first[0].numpy(), raw)
    other = next(iter(make_loader(ds, batch_size=8, seed=6)))
    assert not torch.equal(other[0], first[0])


def test_augment_batch_snr_cfo_and_timing_are_what_was_asked():
    x = np.tile(packet_waveform(CFG)[: CFG.preamble_samples], (16, 1))
    rng = np.random.default_rng(0)
    only_noise = Augmentation(
        snr_db=(5.0, 5.0), multipath_probability=0.0, cfo_shift_hz=None, timing_shift_samples=None
    )
    y = augment_batch(x, only_noise, CFG, rng=rng)
    f = np.fft.fftfreq(x.shape[1], 1 / CFG.fs_hz)
    noise_in_band = (
        np.sum(np.abs(np.fft.fft(y - x, axis=1)[:, np.abs(f) <= CFG.bw_hz / 2]) ** 2) / x.size / x.shape[1]
    )
    assert 10 * np.log10(1 / noise_in_band) == pytest.approx(5.0, abs=0.2)
    only_cfo = Augmentation(
        snr_db=None, multipath_probability=0.0, cfo_shift_hz=(300.0, 300.0), timing_shift_samples=None
    )
    y = augment_batch(x, only_cfo, CFG, rng=rng)
    step = np.angle(np.sum(y[:, 1:] * np.conj(x[:, 1:]) * np.conj(y[:, :-1] * np.conj(x[:, :-1])), axis=1))
    np.testing.assert_allclose(step * CFG.fs_hz / (2 * np.pi), 300.0, rtol=1e-3)
    only_timing = Augmentation(
        snr_db=None, multipath_probability=0.0, cfo_shift_hz=None, timing_shift_samples=(2.0, 2.0)
    )
    y = augment_batch(x, only_timing, CFG, rng=rng)
    np.testing.assert_allclose(y[:, 2:], x[:, :-2], atol=2e-3)
    with pytest.raises(ConfigError, match="snr_db="):
        Augmentation(snr_db=(10.0, 5.0))


def test_augmented_multipath_keeps_power_on_average():
    x = np.tile(packet_waveform(CFG)[: CFG.preamble_samples], (200, 1))
    aug = Augmentation(snr_db=None, multipath_probability=1.0, cfo_shift_hz=None, timing_shift_samples=None)
    y = augment_batch(x, aug, CFG, rng=np.random.default_rng(1))
    power = np.mean(np.abs(y) ** 2, axis=1)
    assert power.mean() == pytest.approx(1.0, abs=0.15)
    assert power.std() > 0.1  # fading varies per packet


def test_dataset_reads_a_public_layout_file_with_cfg(tmp_path, h5_file):
    _, ps = h5_file
    import h5py

    path = tmp_path / "public.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.concatenate([ps.preambles.real, ps.preambles.imag], axis=1).astype(np.float64)
        f["label"] = ps.device_ids[None, :].astype(np.float64)
    assert open_preamble_file(path).layout == "public"
    with pytest.raises(ConfigError, match="cfg="):
        PreambleDataset(path)
    ds = PreambleDataset(path, cfg=CFG, devices=[3])
    x, y = ds[BatchRequest((0, 1), seed=1)]
    np.testing.assert_allclose(x.numpy(), ps.preambles[12:14], atol=1e-6)
