"""Our HDF5 preamble schema: writer, append, random-access reader, worker processes, exact conversions."""

from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import pickle
from concurrent.futures import ProcessPoolExecutor

import h5py
import numpy as np
import pytest

from lorarffi.datasets.native import (
    FORMAT_NAME,
    PreambleWriter,
    convert,
    load_dataset,
    open_preamble_file,
)
from lorarffi.datasets.public import load_public
from lorarffi.dsp.chirp import packet_waveform
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError, InputDataError

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=250e3)  # 2048-sample preambles: small files


def _preambles(n: int, seed: int = 0, cfg: LoRaConfig = CFG) -> tuple[np.ndarray, np.ndarray]:
    """n simulated preambles with known CFOs (ideal chirps, CFO and noise; truth for the metadata)."""
    rng = np.random.default_rng(seed)
    cfo_hz = rng.uniform(-5e3, 5e3, n)
    clean = np.stack([packet_waveform(cfg, cfo_hz=float(c))[: cfg.preamble_samples] for c in cfo_hz])
    noise = 0.05 * (rng.standard_normal(clean.shape) + 1j * rng.standard_normal(clean.shape))
    return (clean + noise).astype(np.complex64), cfo_hz


@pytest.fixture()
def native_file(tmp_path) -> tuple[pathlib.Path, np.ndarray, np.ndarray, np.ndarray]:
    iq, cfo_hz = _preambles(30)
    ids = np.repeat([3, 1, 2], 10)
    path = tmp_path / "native.h5"
    with PreambleWriter(path, CFG, source="test session 1", provenance={"seed": 0}) as w:
        assert w.append(iq[:12], ids[:12], cfo_hz=cfo_hz[:12], snr_db=20.0,
                        start=np.arange(12) * 10_000, capture_time_s=1.7e9 + np.arange(12)) == 12
        assert w.append(iq[12:], ids[12:], cfo_hz=cfo_hz[12:]) == 30
    return path, iq, ids, cfo_hz


def test_written_packets_and_metadata_read_back_exactly(native_file) -> None:
    path, iq, ids, cfo_hz = native_file
    with open_preamble_file(path) as pf:
        assert pf.layout == "native" and len(pf) == 30 and pf.n_samples_per_packet == CFG.preamble_samples
        assert pf.cfg == CFG
        np.testing.assert_array_equal(pf.device_ids, ids)
        np.testing.assert_array_equal(pf.read_rows(np.arange(30)), iq)
        m = pf.meta([0, 11, 12, 29])
        np.testing.assert_array_equal(m["cfo_hz"], cfo_hz[[0, 11, 12, 29]])
        np.testing.assert_array_equal(m["snr_db"], [20.0, 20.0, np.nan, np.nan])
        np.testing.assert_array_equal(m["start"], [0, 110_000, -1, -1])
        np.testing.assert_array_equal(m["capture_time_s"], [1.7e9, 1.7e9 + 11, np.nan, np.nan])
        assert list(m["source"]) == ["test session 1"] * 4
        assert pf.sources[0]["provenance"] == {"seed": 0}
        attrs = pf.attrs
    assert attrs["lorarffi_format"] == FORMAT_NAME and attrs["sf"] == 7 and attrs["fs_hz"] == 250e3
    with h5py.File(path) as f:  # stored as documented: chunked, compressed, resizable, complex64
        p = f["preambles"]
        assert p.dtype == np.complex64 and p.compression == "gzip" and p.maxshape == (None, 2048)
        assert f["device_id"].maxshape == (None,) and f["cfo_hz"].dtype == np.float64


def test_read_rows_any_order_with_repeats_and_select_per_device(native_file) -> None:
    path, iq, ids, _ = native_file
    with open_preamble_file(path) as pf:
        order = [29, 0, 5, 5, 17, -1]
        np.testing.assert_array_equal(pf.read_rows(order), iq[order])
        np.testing.assert_array_equal(pf.meta(order)["device_id"], ids[order])
        rows = pf.select(devices=[1, 3], packets=slice(2, 5))
        np.testing.assert_array_equal(rows, [2, 3, 4, 12, 13, 14])
        assert pf.read_rows([]).shape == (0, 2048)
        with pytest.raises(IndexError):
            pf.read_rows([30])
    got_iq, got_ids = load_dataset(path, devices=2, packets=[0, 9])
    np.testing.assert_array_equal(got_iq, iq[[20, 29]])
    np.testing.assert_array_equal(got_ids, [2, 2])


def test_append_extends_the_file_and_records_a_new_source(native_file) -> None:
    path, iq, ids, _ = native_file
    extra, _ = _preambles(4, seed=9)
    with PreambleWriter(path, CFG, source="session 2", append=True) as w:
        assert len(w) == 30
        w.append(extra, 7)
    with open_preamble_file(path) as pf:
        assert len(pf) == 34
        np.testing.assert_array_equal(pf.read_rows(np.arange(34)), np.concatenate([iq, extra]))
        np.testing.assert_array_equal(pf.device_ids[30:], [7] * 4)
        assert list(pf.meta([0, 33])["source"]) == ["test session 1", "session 2"]
    with pytest.raises(ConfigError, match="holds packets at SF7, .*, these are at SF8, "):
        PreambleWriter(path, CFG.replace(sf=8), source="x", append=True)
    with pytest.raises(ConfigError, match="exists: choose another name, or replace it \\(--overwrite"):
        PreambleWriter(path, CFG, source="x")
    with PreambleWriter(path, CFG, source="x", append=True) as w:
        with pytest.raises(ConfigError, match="2048 per"):
            w.append(extra[:, :100], 7)


def _write_then_crash(path: pathlib.Path, iq: np.ndarray) -> None:
    w = PreambleWriter(path, CFG, source="live")
    w.append(iq[:4], [1, 1, 2, 2])
    w.append(iq[4:6], [3, 3])
    os._exit(1)  # a crash: no close, no interpreter clean-up


def test_a_crash_after_append_keeps_every_appended_packet(tmp_path) -> None:
    iq, _ = _preambles(6)
    path = tmp_path / "live.h5"
    child = multiprocessing.get_context("fork").Process(target=_write_then_crash, args=(path, iq))
    child.start()
    child.join(60)
    assert child.exitcode == 1
    with open_preamble_file(path) as pf:
        np.testing.assert_array_equal(pf.read_rows(np.arange(len(pf))), iq)
        np.testing.assert_array_equal(pf.device_ids, [1, 1, 2, 2, 3, 3])
    w = PreambleWriter(path, CFG, source="after the crash", append=True)
    w.close()
    w.close()
    with pytest.raises(ConfigError, match="closed"):
        w.append(iq[4:], [3, 3])


def test_bad_appends_are_refused_with_the_parameter_named(tmp_path) -> None:
    iq, _ = _preambles(3)
    with PreambleWriter(tmp_path / "x.h5", CFG, source="t") as w:
        with pytest.raises(ConfigError, match=r"cfo_hz has shape \(2,\), expected \(3,\)"):
            w.append(iq, [1, 2, 3], cfo_hz=[1.0, 2.0])
        with pytest.raises(ConfigError, match="device_ids has dtype"):
            w.append(iq, ["a", "b", "c"])
        bad = iq.copy()
        bad[0, 0] = np.nan
        with pytest.raises(ConfigError, match="NaN"):
            w.append(bad, [1, 2, 3])
        assert w.append(iq[0], 5) == 1  # a single (L,) packet
    with pytest.raises(ConfigError, match="provenance is not JSON"):
        PreambleWriter(tmp_path / "y.h5", CFG, source="t", provenance={"f": object()})


def _read_in_worker(pf, rows):
    return pf.read_rows(rows), pf.meta(rows)["cfo_hz"]


def test_preamble_file_pickles_and_reads_in_worker_processes(native_file) -> None:
    path, iq, _, cfo_hz = native_file
    pf = open_preamble_file(path)
    pf.read_rows([0])  # the parent has an open handle; a forked child must not reuse it
    assert len(pickle.dumps(pf)) < 10_000  # path and ids, not the IQ
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        results = list(pool.map(_read_in_worker, [pf, pf], [[1, 2], [28, 3]]))
    np.testing.assert_array_equal(results[0][0], iq[[1, 2]])
    np.testing.assert_array_equal(results[1][0], iq[[28, 3]])
    np.testing.assert_array_equal(results[1][1], cfo_hz[[28, 3]])
    np.testing.assert_array_equal(pf.read_rows([4]), iq[[4]])
    pf.close()


def test_native_to_public_to_native_is_exact(native_file, tmp_path) -> None:
    path, iq, ids, _ = native_file
    pub, back = tmp_path / "pub.h5", tmp_path / "back.h5"
    assert convert(path, pub, "public") == 30
    pub_iq, pub_ids = load_public(pub)  # the public loader reads what we wrote
    np.testing.assert_array_equal(pub_iq, iq)
    np.testing.assert_array_equal(pub_ids, ids)
    with h5py.File(pub) as f:
        assert set(f.keys()) == {"data", "label"} and f["label"].shape == (1, 30)
        np.testing.assert_array_equal(f["data"][:, :2048] + 1j * f["data"][:, 2048:], iq)  # [I | Q] rows
    convert(pub, back, "native")
    with open_preamble_file(back) as pf:
        np.testing.assert_array_equal(pf.read_rows(np.arange(30)), iq)
        np.testing.assert_array_equal(pf.device_ids, ids)
        assert pf.cfg == CFG  # kept in the public file's lorarffi_conversion attribute
        assert np.all(np.isnan(pf.meta(np.arange(30))["cfo_hz"]))  # documented as lost
    # native -> native keeps the metadata and the sources
    convert(path, tmp_path / "copy.h5", "native")
    with open_preamble_file(tmp_path / "copy.h5") as a, open_preamble_file(path) as b:
        ma, mb = a.meta(np.arange(30)), b.meta(np.arange(30))
        for key in ("cfo_hz", "snr_db", "start", "capture_time_s", "source"):
            np.testing.assert_array_equal(ma[key], mb[key])


@pytest.mark.parametrize(("data_dtype", "label_dtype", "label_shape"),
                         [("float64", "float64", (1, -1)), ("float32", "int32", (-1, 1)),
                          ("float64", "int64", (-1,))])
def test_public_to_native_to_public_is_bit_exact(tmp_path, data_dtype, label_dtype, label_shape) -> None:
    rng = np.random.default_rng(11)
    data = rng.standard_normal((20, 64)).astype(data_dtype)
    label = np.repeat(np.arange(41, 46), 4).astype(label_dtype).reshape(label_shape)
    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f["data"] = data
        f["label"] = label
    convert(src, tmp_path / "mid.h5", "native")
    with open_preamble_file(tmp_path / "mid.h5") as pf:
        assert pf.layout == "native" and pf.cfg is None and len(pf) == 20
    convert(tmp_path / "mid.h5", tmp_path / "out.h5", "public")
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["data"].dtype == data.dtype and f["label"].dtype == label.dtype
        assert f["label"].shape == label.shape
        np.testing.assert_array_equal(f["data"][()], data)
        np.testing.assert_array_equal(f["label"][()], label)


def test_convert_refuses_to_clobber_and_leaves_no_partial_output(native_file, tmp_path) -> None:
    path, _, _, _ = native_file
    out = tmp_path / "o.h5"
    out.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="exists"):
        convert(path, out, "public")
    assert out.read_bytes() == b"keep me"
    with pytest.raises(ConfigError, match="is the input file"):
        convert(path, path, "native", overwrite=True)
    with pytest.raises(ConfigError, match="to='matlab'"):
        convert(path, tmp_path / "p.h5", "matlab")  # type: ignore[arg-type]
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["data"] = np.zeros((2, 5))
        f["label"] = np.ones((1, 2))
    with pytest.raises(InputDataError, match="odd length 5"):
        convert(bad, tmp_path / "never.h5", "native")
    assert not any(p.name.startswith((".never", "never")) for p in tmp_path.iterdir())


def test_inconsistent_native_files_are_input_errors(native_file, tmp_path) -> None:
    path, _, _, _ = native_file
    with h5py.File(path, "a") as f:
        f["device_id"].resize((29,))
    with pytest.raises(InputDataError, match="'preambles' has 30 rows but 'device_id' has 29"):
        open_preamble_file(path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["weights"] = np.zeros(3)
    with pytest.raises(InputDataError, match=r"neither the public LoRa_RFFI layout .* holds \['weights'\]"):
        load_dataset(other)
    with h5py.File(tmp_path / "future.h5", "w") as f:
        f.attrs["lorarffi_format"] = FORMAT_NAME
        f.attrs["format_version"] = 99
        f["device_id"] = np.zeros(0, np.int64)
        f["sources"] = np.array([json.dumps({"name": "x"})], dtype=h5py.string_dtype())
    with pytest.raises(InputDataError, match="format_version 99 is newer"):
        open_preamble_file(tmp_path / "future.h5")


def test_an_empty_native_file_opens_with_its_configured_length(tmp_path) -> None:
    path = tmp_path / "empty.h5"
    PreambleWriter(path, CFG, source="nothing yet").close()
    with open_preamble_file(path) as pf:
        assert len(pf) == 0 and pf.n_samples_per_packet == CFG.preamble_samples
        assert pf.select().size == 0
    iq, ids = load_dataset(path)
    assert iq.shape == (0, CFG.preamble_samples) and ids.size == 0
