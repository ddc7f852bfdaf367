"""The public LoRa_RFFI layout: selection against the authors' loader, label variants, bad files, memory."""

from __future__ import annotations

import gc
import pathlib

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorarffi.datasets.public import load_public
from lorarffi.errors import ConfigError, InputDataError


def _write_public(path: pathlib.Path, iq: np.ndarray, ids: np.ndarray, *, label_shape: str = "row",
                  label_dtype: str = "float64", data_dtype: str = "float32") -> pathlib.Path:
    data = np.concatenate([iq.real, iq.imag], axis=1).astype(data_dtype)
    label = np.asarray(ids).astype(label_dtype)
    label = {"row": label[None, :], "column": label[:, None], "flat": label}[label_shape]
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)
        f.create_dataset("label", data=label)
    return path


def _reference_load(path: pathlib.Path, dev_range, pkt_range):
    """The authors' LoadDataset.load_iq_samples (Openset_RFFI_TIFS/dataset_preparation.py), ids 1-based."""
    with h5py.File(path, "r") as f:
        label = np.transpose(f["label"][:].reshape(1, -1)).astype(int)  # (N, 1) like the reference
        data = f["data"][:]
    half = data.shape[1] // 2
    rows = np.concatenate([np.where(label[:, 0] == dev)[0][pkt_range] for dev in dev_range])
    rows = np.sort(rows)  # the reference concatenates device by device; ours keeps file order
    return data[rows, :half] + 1j * data[rows, half:], label[rows, 0]


@pytest.fixture(scope="module")
def interleaved(tmp_path_factory) -> tuple[pathlib.Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    ids = rng.choice([1, 2, 3, 5, 8], size=90)  # devices interleaved, unequal packet counts
    iq = (rng.standard_normal((90, 64)) + 1j * rng.standard_normal((90, 64))).astype(np.complex64)
    path = _write_public(tmp_path_factory.mktemp("pub") / "interleaved.h5", iq, ids)
    return path, iq, ids


def test_selection_matches_the_authors_loader(interleaved) -> None:
    path, iq, ids = interleaved
    got_iq, got_ids = load_public(path, devices=[2, 5], packets=range(0, 4))
    ref_iq, ref_ids = _reference_load(path, [2, 5], range(0, 4))
    np.testing.assert_array_equal(got_iq, ref_iq.astype(np.complex64))  # exact: one rounding per component
    np.testing.assert_array_equal(got_ids, ref_ids)
    assert got_iq.dtype == np.complex64 and got_ids.dtype == np.int64
    assert sorted(got_ids.tolist()) == [2] * 4 + [5] * 4
    # negative control: another device's packets differ
    other, _ = load_public(path, devices=[3], packets=range(0, 4))
    assert not np.array_equal(other, got_iq[:4])


@settings(max_examples=25, deadline=None)
@given(devs=st.sets(st.sampled_from([1, 2, 3, 5, 8]), min_size=1), a=st.integers(0, 25), n=st.integers(0, 30))
def test_any_device_subset_and_packet_slice_equals_the_reference(interleaved, devs, a, n) -> None:
    path, _, _ = interleaved
    got_iq, got_ids = load_public(path, devices=sorted(devs), packets=slice(a, a + n))
    ref_iq, ref_ids = _reference_load(path, sorted(devs), slice(a, a + n))
    np.testing.assert_array_equal(got_iq, ref_iq.astype(np.complex64))
    np.testing.assert_array_equal(got_ids, ref_ids)


def test_all_rows_in_file_order_by_default(interleaved) -> None:
    path, iq, ids = interleaved
    got_iq, got_ids = load_public(path)
    np.testing.assert_array_equal(got_iq, iq)
    np.testing.assert_array_equal(got_ids, ids)
    one_iq, one_ids = load_public(path, devices=8)
    np.testing.assert_array_equal(one_iq, iq[ids == 8])
    assert set(one_ids.tolist()) == {8}


@pytest.mark.parametrize(("label_shape", "label_dtype"),
                         [("row", "float64"), ("column", "int32"), ("flat", "int64"), ("column", "float32")])
def test_label_orientations_and_types_are_accepted(tmp_path, label_shape, label_dtype) -> None:
    rng = np.random.default_rng(6)
    ids = np.repeat([31, 32, 33], 4)
    iq = (rng.standard_normal((12, 16)) + 1j * rng.standard_normal((12, 16))).astype(np.complex64)
    path = _write_public(tmp_path / "f.h5", iq, ids, label_shape=label_shape, label_dtype=label_dtype,
                         data_dtype="float64")
    got_iq, got_ids = load_public(path, devices=[32, 33], packets=slice(1, 3))
    np.testing.assert_array_equal(got_ids, [32, 32, 33, 33])
    np.testing.assert_array_equal(got_iq, iq[[5, 6, 9, 10]])


def test_requests_outside_the_file_are_config_errors(interleaved) -> None:
    path, _, ids = interleaved
    with pytest.raises(ConfigError, match=r"devices 4, 9 are not in .*holds devices 1, 2, 3, 5, 8"):
        load_public(path, devices=[1, 4, 9])
    n2 = int(np.sum(ids == 2))
    with pytest.raises(ConfigError, match=f"packet {n2 + 5} of device 2, which has {n2} packets"):
        load_public(path, devices=[2], packets=range(n2 + 6))
    iq, got = load_public(path, devices=[2], packets=slice(0, 10_000))  # a slice is clipped, like numpy
    assert got.size == n2


def _bad(tmp_path: pathlib.Path, name: str, **datasets) -> pathlib.Path:
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return path


@pytest.mark.parametrize(
    ("datasets", "problem"),
    [
        ({"label": np.ones((1, 3))}, r"no dataset 'data' \(a LoRa_RFFI file holds 'data' and 'label'"),
        ({"data": np.zeros((3, 8))}, "no dataset 'label'"),
        ({"data": np.zeros((3, 7)), "label": np.ones((1, 3))}, "odd length 7"),
        ({"data": np.zeros((3, 8)), "label": np.ones((1, 4))}, "'label' has 4 entries but 'data' has 3 rows"),
        ({"data": np.zeros((3, 8)), "label": np.ones((3, 2))}, r"'label' has shape \(3, 2\)"),
        ({"data": np.zeros((3, 8)), "label": np.array([[1.0, 2.5, 3.0]])}, "2.5, which is not an integer"),
        ({"data": np.zeros(8), "label": np.ones(1)}, r"'data' has shape \(8,\)"),
    ],
)
def test_malformed_public_files_are_one_line_input_errors(tmp_path, datasets, problem) -> None:
    path = _bad(tmp_path, "bad.h5", **datasets)
    with pytest.raises(InputDataError, match=problem) as info:
        load_public(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_truncated_and_non_hdf5_files(tmp_path, interleaved) -> None:
    src, _, _ = interleaved
    cut = tmp_path / "cut.h5"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(InputDataError, match=r"cut\.h5: truncated HDF5 file"):
        load_public(cut)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(InputDataError, match="not an HDF5 file"):
        load_public(junk)
    with pytest.raises(InputDataError, match="no such file"):
        load_public(tmp_path / "absent.h5")


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def test_reading_100_packets_of_a_300_mb_file_keeps_memory_small(tmp_path) -> None:
    """Issue 3: 2 devices x 50 packets from a >= 300 MB public-layout file grow RSS by < 100 MB."""
    n_devices, n_per_device, half = 40, 120, 8192
    path = tmp_path / "big.h5"
    rng = np.random.default_rng(7)
    block = rng.standard_normal((n_per_device, 2 * half)).astype(np.float32)  # reused: fast to build
    with h5py.File(path, "w") as f:
        data = f.create_dataset("data", shape=(n_devices * n_per_device, 2 * half), dtype=np.float32,
                                chunks=(8, 2 * half))
        for d in range(n_devices):
            block[:, 0] = d  # make rows differ per device for the content check below
            data[d * n_per_device:(d + 1) * n_per_device] = block
        labels = np.repeat(np.arange(1, n_devices + 1), n_per_device).astype(float)
        f.create_dataset("label", data=labels[None, :])
    assert path.stat().st_size >= 300e6
    del block
    gc.collect()
    before = _rss_bytes()
    iq, ids = load_public(path, devices=[7, 23], packets=slice(10, 60))
    grown = _rss_bytes() - before
    assert iq.shape == (100, half) and iq.dtype == np.complex64
    np.testing.assert_array_equal(ids, [7] * 50 + [23] * 50)
    np.testing.assert_array_equal(iq[:50, 0].real, 6.0)  # device 7 was written with d = 6
    np.testing.assert_array_equal(iq[50:, 0].real, 22.0)
    print(f"RSS growth reading 100 of {n_devices * n_per_device} rows ({path.stat().st_size / 1e6:.0f} MB): "
          f"{grown / 1e6:.1f} MB")
    assert grown < 100e6, f"resident memory grew by {grown / 1e6:.1f} MB"
