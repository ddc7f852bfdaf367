"""Writing SigMF: exact round trips per datatype, annotations in our namespace, archives, the live recorder.

The ``sigmf`` package is the independent reference: it reads what we write, and we read what it writes.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorarffi.datasets.recording import open_recording
from lorarffi.datasets.sigmf_io import SigMFRecorder, quantize, write_sigmf
from lorarffi.dsp.chirp import packet_waveform
from lorarffi.dsp.config import LoRaConfig
from lorarffi.errors import ConfigError

CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=500e3)


def _signal(n: int = 5000, seed: int = 0, scale: float = 0.4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (scale * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)


def _expected_after_quantisation(x: np.ndarray, datatype: str) -> np.ndarray:
    """What the stored integers mean, computed independently of the writer."""
    re, im = x.real.astype(np.float64), x.imag.astype(np.float64)
    if datatype == "ci16_le":
        q = [np.clip(np.round(c * 32768), -32768, 32767) / 32768 for c in (re, im)]
    elif datatype == "cu8":
        q = [(np.clip(np.round(c * 127.5 + 127.5), 0, 255) - 127.5) / 127.5 for c in (re, im)]
    else:
        return x
    return (q[0] + 1j * q[1]).astype(np.complex64)


@pytest.mark.parametrize("datatype", ["cf32_le", "ci16_le", "cu8"])
def test_write_then_read_is_exact_after_quantisation(tmp_path, datatype) -> None:
    x = _signal()
    t0 = dt.datetime(2026, 3, 1, 12, 30, 5, 250_000, tzinfo=dt.timezone.utc)
    anns = [{"start": 100, "count": 2000, "device_id": 4, "cfo_hz": -1234.5, "snr_db": 17.25},
            {"start": 3000, "count": 1000, "label": "rogue", "verdict": "rejected"}]
    path = write_sigmf(tmp_path / "rec.sigmf-meta", x, 500e3, center_freq_hz=868.1e6, datetime=t0,
                       datatype=datatype, annotations=anns, description="test", cfg=CFG)
    with open_recording(path) as rec:
        got = rec.read(0, x.size)
        assert rec.datatype == datatype and rec.fs_hz == 500e3 and rec.center_freq_hz == 868.1e6
        assert rec.start_time == t0
        a0, a1 = rec.annotations
    expect = _expected_after_quantisation(x, datatype)
    # exact: the reader gives the float32 nearest to (q - offset) * scale and so does the reference (one
    # float64 result rounded once; (2q - 255) / 255 is never near enough a float32 tie for float64 to matter)
    np.testing.assert_array_equal(got, expect)
    if datatype != "cf32_le":  # negative control: quantisation did change the samples
        assert not np.array_equal(got, x)
        inside = (np.abs(x.real) < 1) & (np.abs(x.imag) < 1)  # not clipped
        assert np.max(np.abs(got - x)[inside]) <= (1 / 32768 if datatype == "ci16_le" else 1 / 127.5)
    assert a0 == {"core:sample_start": 100, "core:sample_count": 2000, "core:label": "device 4",
                  "lorarffi:device_id": 4, "lorarffi:cfo_hz": -1234.5, "lorarffi:snr_db": 17.25}
    assert a1["core:label"] == "rogue" and a1["lorarffi:verdict"] == "rejected"
    meta = json.loads(path.read_text())
    assert {"name": "lorarffi", "version": "1.0.0", "optional": True} in meta["global"]["core:extensions"]
    assert meta["global"]["lorarffi:sf"] == 7 and meta["global"]["lorarffi:bw_hz"] == 125e3


@pytest.mark.parametrize("datatype", ["cf32_le", "ci16_le", "cu8"])
def test_the_sigmf_package_reads_our_recordings(tmp_path, datatype) -> None:
    from sigmf import sigmffile

    x = _signal(3000, seed=1)
    path = write_sigmf(tmp_path / "rec", x, 1e6, center_freq_hz=433.92e6, datatype=datatype,
                       annotations=[{"start": 10, "count": 20, "device_id": 2}])
    handle = sigmffile.fromfile(str(path))  # also checks core:sha512 against the data
    ref = np.asarray(handle.read_samples(0, x.size))
    if datatype == "cu8":  # sigmf-python scales cu8 as (q - 128) / 128, we as (q - 127.5) / 127.5
        q = np.round(ref.real * 128 + 128) + 1j * np.round(ref.imag * 128 + 128)
        ref = ((q.real - 127.5) + 1j * (q.imag - 127.5)) / 127.5
    # float64 reference against the float32 nearest to it: <= 2**-24 per component of |v| <= 1, 8.5e-8 complex
    np.testing.assert_allclose(ref, _expected_after_quantisation(x, datatype), rtol=0, atol=1e-7)
    ann = handle.get_annotations()[0]
    assert ann["core:sample_start"] == 10 and ann["lorarffi:device_id"] == 2
    assert handle.get_captures()[0]["core:frequency"] == 433.92e6


def test_we_read_recordings_the_sigmf_package_writes(tmp_path) -> None:
    from sigmf.sigmffile import SigMFFile

    x = _signal(2000, seed=2)
    ints = np.clip(np.round(np.stack([x.real, x.imag], axis=1) * 32768), -32768, 32767).astype("<i2")
    ints.tofile(tmp_path / "theirs.sigmf-data")
    handle = SigMFFile(data_file=str(tmp_path / "theirs.sigmf-data"),
                       global_info={"core:datatype": "ci16_le", "core:sample_rate": 250e3,
                                    "core:version": "1.2.0"})
    handle.add_capture(0, metadata={"core:frequency": 915e6, "core:datetime": "2026-01-02T03:04:05.678Z"})
    handle.add_annotation(500, 100, metadata={"core:label": "pkt"})
    handle.tofile(str(tmp_path / "theirs"))
    with open_recording(tmp_path / "theirs.sigmf-meta") as rec:
        np.testing.assert_array_equal(rec.read(0, 2000), (ints[:, 0] + 1j * ints[:, 1]) / 32768)
        assert rec.center_freq_hz == 915e6 and rec.fs_hz == 250e3
        assert rec.start_time == dt.datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=dt.timezone.utc)
        assert rec.annotations[0]["core:label"] == "pkt"


def test_archive_round_trip_and_package_compatibility(tmp_path) -> None:
    from sigmf import sigmffile

    x = _signal(4000, seed=3)
    path = write_sigmf(tmp_path / "pkt.sigmf-meta", x, 1e6, archive=True,
                       annotations=[{"core:sample_start": 5, "core:sample_count": 7, "core:label": "a"}])
    assert path.name == "pkt.sigmf" and not (tmp_path / "pkt.sigmf-data").exists()
    with open_recording(path) as rec:
        assert rec.kind == "sigmf-archive"
        np.testing.assert_array_equal(rec.read(0, 4000), x)
        assert rec.annotations[0]["core:label"] == "a"
    np.testing.assert_array_equal(sigmffile.fromfile(str(path)).read_samples(0, 4000), x)


def test_write_refuses_to_clobber_and_bad_arguments(tmp_path) -> None:
    x = _signal(100)
    write_sigmf(tmp_path / "a", x, 1e6)
    with pytest.raises(ConfigError, match=r"a\.sigmf-meta.*exists"):
        write_sigmf(tmp_path / "a.sigmf-meta", x, 1e6)
    write_sigmf(tmp_path / "a", x[:10], 1e6, overwrite=True)
    assert open_recording(tmp_path / "a.sigmf-meta").n_samples == 10
    with pytest.raises(ConfigError, match="datatype='ci32_le' is not valid for writing"):
        write_sigmf(tmp_path / "b", x, 1e6, datatype="ci32_le")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fs_hz=-1"):
        write_sigmf(tmp_path / "b", x, -1.0)
    with pytest.raises(ConfigError, match="past the end"):
        write_sigmf(tmp_path / "b", x, 1e6, annotations=[{"start": 101}])
    with pytest.raises(ConfigError, match=r"shape \(10, 10\)"):
        write_sigmf(tmp_path / "b", x.reshape(10, 10), 1e6)


def test_full_scale_overflow_is_clipped_and_counted() -> None:
    raw, n_clipped = quantize(np.array([1.5 + 0j, -2 - 2j, 0.5 + 0.5j]), "ci16_le")
    assert n_clipped == 3
    np.testing.assert_array_equal(raw, [32767, 0, -32768, -32768, 16384, 16384])
    raw, n_clipped = quantize(np.array([1.0 - 1.0j]), "cu8")
    assert n_clipped == 0 and raw.tolist() == [255, 0]


@settings(max_examples=8, deadline=None)
@given(cuts=st.lists(st.integers(1, 800), min_size=1, max_size=5),
       datatype=st.sampled_from(["cf32_le", "cu8"]))
def test_recorder_blocks_equal_one_write(tmp_path_factory, cuts, datatype) -> None:
    d = tmp_path_factory.mktemp("rec")
    x = _signal(4000, seed=4)
    with SigMFRecorder(d / "live", fs_hz=1e6, datatype=datatype) as rec:
        for block in np.split(x, np.cumsum(cuts)[np.cumsum(cuts) < x.size]):
            rec.append(block)
        assert rec.n_samples == x.size
    write_sigmf(d / "whole", x, 1e6, datatype=datatype)
    assert (d / "live.sigmf-data").read_bytes() == (d / "whole.sigmf-data").read_bytes()


def _record_then_crash(path: pathlib.Path, blocks: list[np.ndarray]) -> None:
    rec = SigMFRecorder(path, fs_hz=CFG.fs_hz, center_freq_hz=868.1e6, cfg=CFG, start_time=1.75e9,
                        meta_interval_s=0.0)
    for i, block in enumerate(blocks):
        rec.append(block)
        rec.add_annotation(i * 1000, 500, device_id=i, cfo_hz=100.0 * i, snr_db=20.0, verdict="known")
    os._exit(1)  # crash: no close()


def test_recorder_survives_a_crash_with_blocks_and_annotations(tmp_path) -> None:
    pkt = packet_waveform(CFG, cfo_hz=1500.0).astype(np.complex64) * 0.5
    blocks = [pkt[:3000], pkt[3000:7000], pkt[7000:9000]]
    path = tmp_path / "live.sigmf-meta"
    child = multiprocessing.get_context("fork").Process(target=_record_then_crash, args=(path, blocks))
    child.start()
    child.join(60)
    assert child.exitcode == 1
    with open_recording(path) as rec:
        np.testing.assert_array_equal(rec.read(0, 10**6), pkt[:9000])
        assert [a["lorarffi:device_id"] for a in rec.annotations] == [0, 1, 2]
        assert rec.annotations[2]["lorarffi:cfo_hz"] == 200.0
        assert rec.annotations[1]["lorarffi:verdict"] == "known"
        assert rec.metadata["lorarffi:sf"] == 7 and rec.center_freq_hz == 868.1e6
        assert rec.start_time == dt.datetime.fromtimestamp(1.75e9, dt.timezone.utc)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]  # no temporary files left behind


def test_recorder_rate_limits_metadata_but_close_writes_everything(tmp_path) -> None:
    with SigMFRecorder(tmp_path / "r.sigmf-meta", fs_hz=1e6, meta_interval_s=3600.0) as rec:
        rec.append(_signal(100))
        rec.add_annotation(0, 10, device_id=1)
        on_disk = json.loads((tmp_path / "r.sigmf-meta").read_text())
        assert on_disk["annotations"] == []  # init wrote the metadata < 1 h ago: not rewritten yet
        rec.flush()
        assert len(json.loads((tmp_path / "r.sigmf-meta").read_text())["annotations"]) == 1
        rec.add_annotation(50, 10, device_id=2)
    assert len(json.loads((tmp_path / "r.sigmf-meta").read_text())["annotations"]) == 2
    with pytest.raises(ConfigError, match="exists"):
        SigMFRecorder(tmp_path / "r", fs_hz=1e6)
    with pytest.raises(ConfigError, match="closed"):
        rec.append(_signal(3))
