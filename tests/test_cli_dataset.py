"""``lora-rffi dataset info`` / ``convert`` in-process: output, conversions, and exit code 2 for bad files."""

from __future__ import annotations

import json
import pathlib

import h5py
import numpy as np
import pytest

from lorarffi.cli import main
from lorarffi.datasets.native import PreambleWriter, load_dataset
from lorarffi.datasets.public import load_public
from lorarffi.dsp.config import LoRaConfig

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
CFG = LoRaConfig(sf=8, bw_hz=250e3, fs_hz=500e3, sync_word=0x34)


@pytest.fixture()
def native(tmp_path) -> tuple[pathlib.Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = np.array([5, 5, 5, 9, 9, 12])
    shape = (6, CFG.preamble_samples)
    iq = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    path = tmp_path / "n.h5"
    with PreambleWriter(path, CFG, source="cli test") as w:
        w.append(iq, ids, cfo_hz=np.linspace(-900, 700, 6))
    return path, iq, ids


def _one_error_line(capsys, path: pathlib.Path, problem: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"lora-rffi: error: {path}") and problem in err[0], err[0]


def test_info_json_on_a_native_file(native, capsys) -> None:
    path, _, _ = native
    assert main(["dataset", "info", str(path), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    info = json.loads(out[0])
    assert info["layout"] == "native" and info["devices"] == [5, 9, 12] and info["packets"] == 6
    assert info["packets_per_device"] == {"5": 3, "9": 2, "12": 1}
    assert info["n_samples_per_packet"] == CFG.preamble_samples and info["fs_hz"] == 500e3
    assert info["lora"] == CFG.to_dict()
    assert info["metadata"]["cfo_hz"] == {"n_known": 6, "min": -900.0, "max": 700.0}


def test_info_text_on_a_public_file(tmp_path, capsys) -> None:
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((4, 2 * 8192), np.float32)
        f["label"] = np.array([[31.0, 31.0, 32.0, 40.0]])
    assert main(["dataset", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "layout               public" in out and "packets              4" in out
    assert "samples per packet   8192" in out and "SF7, 125 kHz, 1 MS/s" in out
    assert "    31        2" in out and "    40        1" in out


@pytest.mark.skipif(not DATA.is_dir(), reason="shared test data absent")
def test_info_on_real_recordings(capsys) -> None:
    meta = DATA / "grlora_sdr" / "sf10_bw125k_fs250k_sync34_pre12.sigmf-meta"
    assert main(["dataset", "info", str(meta), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    n_annotations = len(json.loads(meta.read_text())["annotations"])
    assert info["kind"] == "sigmf" and info["datatype"] == "cf32_le" and info["fs_hz"] == 250e3
    assert info["annotations"] == info["packets"] == n_annotations and info["devices"] == []
    size = meta.with_suffix(".sigmf-data").stat().st_size
    assert info["duration_s"] == pytest.approx(size / 8 / 250e3)
    wav = DATA / "oat4cat_lora433_sf11_bw500" / "oat4cat_u_0001.wav"
    assert main(["dataset", "info", str(wav)]) == 0
    out = capsys.readouterr().out
    assert "wav (cu8)" in out and "2.4 MHz" in out


def test_info_on_a_raw_file_needs_format_and_rate(tmp_path, capsys) -> None:
    raw = tmp_path / "cap.bin"
    np.zeros(2000, np.uint8).tofile(raw)
    assert main(["dataset", "info", str(raw), "--format", "cu8", "--fs-hz", "2.4M", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_samples"] == 1000 and info["fs_hz"] == 2.4e6 and info["kind"] == "raw"
    assert main(["dataset", "info", str(raw)]) == 2
    _one_error_line(capsys, raw, "give format (--format cf32|ci16|cu8|ci8) and fs_hz (--fs-hz)")


def test_convert_both_ways_keeps_iq_and_ids(native, tmp_path, capsys) -> None:
    path, iq, ids = native
    pub, back = tmp_path / "pub.h5", tmp_path / "back.h5"
    assert main(["dataset", "convert", str(path), str(pub), "--to", "public"]) == 0
    assert "6 packets of 3 devices in the public layout" in capsys.readouterr().out
    got_iq, got_ids = load_public(pub)
    np.testing.assert_array_equal(got_iq, iq)
    np.testing.assert_array_equal(got_ids, ids)
    assert main(["dataset", "convert", str(pub), str(back), "--to", "native"]) == 0
    got_iq, got_ids = load_dataset(back)
    np.testing.assert_array_equal(got_iq, iq)
    np.testing.assert_array_equal(got_ids, ids)
    assert main(["dataset", "convert", str(pub), str(back), "--to", "native"]) == 2
    _one_error_line(capsys, back, "exists")
    assert main(["dataset", "convert", str(pub), str(back), "--to", "native", "--overwrite"]) == 0


def _public(path: pathlib.Path, **datasets) -> pathlib.Path:
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f[k] = v
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: _public(d / "nodata.h5", label=np.ones((1, 2))), "no dataset 'data'"),
        (lambda d: _public(d / "nolabel.h5", data=np.zeros((2, 8))), "no dataset 'label'"),
        (lambda d: _public(d / "odd.h5", data=np.zeros((2, 9)), label=np.ones((1, 2))), "odd length 9"),
        (lambda d: _public(d / "count.h5", data=np.zeros((2, 8)), label=np.ones((1, 3))),
         "'label' has 3 entries but 'data' has 2 rows"),
    ],
)
def test_bad_preamble_files_exit_2_with_one_line(tmp_path, capsys, make, problem) -> None:
    path = make(tmp_path)
    for argv in (["dataset", "info", str(path)], ["dataset", "convert", str(path), str(tmp_path / "o.h5"),
                                                   "--to", "native"]):
        assert main(argv) == 2
        _one_error_line(capsys, path, problem)
    assert not (tmp_path / "o.h5").exists()


def test_truncated_hdf5_exits_2(native, tmp_path, capsys) -> None:
    path, _, _ = native
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[:-1000])
    assert main(["dataset", "info", str(cut), "--json"]) == 2
    _one_error_line(capsys, cut, "truncated HDF5 file")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ('{"global": {"core:datatype": "cf128_le", "core:sample_rate": 1e6}}',
         "unsupported datatype 'cf128_le'"),
        ('{"global": {"core:datatype": "cf32_le", "core:sample_rate": 1e6,}}', "metadata is not valid JSON"),
        ('{"global": {"core:sample_rate": 1e6}}', "no core:datatype"),
    ],
)
def test_bad_sigmf_recordings_exit_2(tmp_path, capsys, meta, problem) -> None:
    path = tmp_path / "r.sigmf-meta"
    path.write_text(meta)
    (tmp_path / "r.sigmf-data").write_bytes(b"\x00" * 64)
    assert main(["dataset", "info", str(path)]) == 2
    _one_error_line(capsys, path, problem)


def test_missing_file_and_missing_action(tmp_path, capsys) -> None:
    assert main(["dataset", "info", str(tmp_path / "nothing.h5")]) == 2
    _one_error_line(capsys, tmp_path / "nothing.h5", "no such file")
    assert main(["dataset"]) == 2
    assert "info" in capsys.readouterr().err
