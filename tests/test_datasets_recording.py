"""The chunked recording reader: raw files, SigMF (pair and archive), two-channel WAV, and every bad file."""

from __future__ import annotations

import datetime as dt
import json
import logging
import pathlib
import pickle
import struct
import tarfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lorarffi.datasets.recording import iq_to_complex64, open_recording
from lorarffi.errors import ConfigError, InputDataError

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
OAT = DATA / "oat4cat_lora433_sf11_bw500"
GRLORA = DATA / "grlora_sdr"


def _write_wav(path: pathlib.Path, comps: np.ndarray, *, tag: int, bits: int, n_ch: int = 2,
               rate: int = 2_400_000, extra_chunks: bytes = b"") -> None:
    """A minimal RIFF/WAVE writer (format tag 1 = PCM, 3 = IEEE float), independent of the reader."""
    data = np.ascontiguousarray(comps).tobytes()
    block = n_ch * bits // 8
    fmt = struct.pack("<HHIIHH", tag, n_ch, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunks
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def _rng_iq(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.5 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))).astype(np.complex64)


# -- real recordings -----------------------------------------------------------------------------------------


@pytest.mark.skipif(not OAT.is_dir(), reason="shared test data absent")
def test_real_wav_u8_matches_the_documented_conversion() -> None:
    path = OAT / "oat4cat_signal_0000.wav"
    raw = np.fromfile(path, dtype=np.uint8)[44:].astype(np.float64)  # 44-byte header, README
    expect = ((raw[0::2] - 127.5) + 1j * (raw[1::2] - 127.5)) / 127.5
    with open_recording(path) as rec:
        assert rec.kind == "wav"
        assert rec.datatype == "cu8"
        assert rec.fs_hz == 2_400_000.0
        assert rec.n_samples == expect.size == (path.stat().st_size - 44) // 2
        got = np.concatenate([c for _, c in rec.iter_chunks(100_003)])
        starts = [s for s, _ in rec.iter_chunks(100_003)]
    assert got.dtype == np.complex64
    assert starts == list(range(0, expect.size, 100_003))
    # the reader's float32 is the nearest to the exact value: 6e-8 per component at most
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-6)
    # the burst is about 43 dB above the receiver noise at the start (file's .txt): a real signal, not zeros
    noise = got[:50_000] - got[:50_000].mean()
    assert np.mean(np.abs(got[-100_000:]) ** 2) > 100 * np.mean(np.abs(noise) ** 2)


@pytest.mark.skipif(not GRLORA.is_dir(), reason="shared test data absent")
def test_real_sigmf_cf32_samples_rate_frequency_and_annotations() -> None:
    meta_path = GRLORA / "sf7_bw500k_fs2M_sync12_pre8.sigmf-meta"
    meta = json.loads(meta_path.read_text())
    expect = np.fromfile(meta_path.with_suffix(".sigmf-data"), dtype="<c8")
    for path in (meta_path, meta_path.with_suffix(".sigmf-data")):
        with open_recording(path) as rec:
            assert rec.kind == "sigmf"
            assert rec.fs_hz == 2e6
            assert rec.center_freq_hz == 868.1e6
            assert rec.datatype == "cf32_le"
            assert rec.n_samples == expect.size
            assert [a["core:sample_start"] for a in rec.annotations] == [
                a["core:sample_start"] for a in meta["annotations"]]
            np.testing.assert_array_equal(np.concatenate([c for _, c in rec.iter_chunks(4096)]), expect)
            a = rec.annotations[1]
            np.testing.assert_array_equal(rec.read(a["core:sample_start"], a["core:sample_count"]),
                                          expect[a["core:sample_start"]:][: a["core:sample_count"]])
            # ideal signal: exact zeros before the first packet, not after
            first = rec.annotations[0]["core:sample_start"]
            assert not np.any(rec.read(0, first)) and np.all(rec.read(first, 100) != 0)


# -- raw files -----------------------------------------------------------------------------------------------


def test_raw_formats_convert_with_their_documented_scaling(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(1)
    n = 1001
    cases = {
        "cf32": (rng.standard_normal(2 * n).astype("<f4"), lambda c: c.astype(np.float64)),
        "ci16": (rng.integers(-32768, 32768, 2 * n).astype("<i2"), lambda c: c / 32768.0),
        "cu8": (rng.integers(0, 256, 2 * n).astype(np.uint8), lambda c: (c - 127.5) / 127.5),
        "ci8": (rng.integers(-128, 128, 2 * n).astype(np.int8), lambda c: c / 128.0),
    }
    for fmt, (comps, scale) in cases.items():
        path = tmp_path / f"x.{fmt}"
        comps.tofile(path)
        f = scale(comps.astype(np.float64))
        expect = f[0::2] + 1j * f[1::2]
        with open_recording(path, format=fmt, fs_hz=1e6, center_freq_hz=868.1e6) as rec:
            assert rec.kind == "raw" and rec.n_samples == n and rec.center_freq_hz == 868.1e6
            got = rec.read(0, n)
        assert got.dtype == np.complex64
        # each component is the float32 nearest to the exact value: relative error <= 2**-24 = 6e-8
        np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-7, err_msg=fmt)
    # the extremes of cu8 map to +-1 exactly
    np.testing.assert_allclose(iq_to_complex64(np.array([0, 255], np.uint8), "cu8"), [-1 + 1j], atol=0)


def test_raw_file_without_format_or_rate_names_what_is_missing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "capture.bin"
    np.zeros(16, np.uint8).tofile(path)
    with pytest.raises(ConfigError, match=r"format \(--format.*and fs_hz \(--fs-hz\)"):
        open_recording(path)
    with pytest.raises(ConfigError, match=r"give fs_hz \(--fs-hz\)$"):
        open_recording(path, format="cu8")
    with pytest.raises(ConfigError, match=r"give format"):
        open_recording(path, fs_hz=1e6)
    with pytest.raises(ConfigError, match="format='cs12'"):
        open_recording(path, format="cs12", fs_hz=1e6)
    with pytest.raises(InputDataError, match="no such file"):
        open_recording(tmp_path / "absent.cu8", format="cu8", fs_hz=1e6)


def test_truncated_raw_file_reads_whole_samples_and_counts_dropped_bytes(tmp_path, caplog) -> None:
    iq = _rng_iq(100)
    path = tmp_path / "cut.cf32"
    path.write_bytes(iq.tobytes() + b"\x01\x02\x03")
    with caplog.at_level(logging.WARNING, logger="lorarffi.datasets.recording"):
        rec = open_recording(path, format="cf32", fs_hz=1e6)
    assert rec.n_samples == 100 and rec.n_dropped_bytes == 3
    assert "3 trailing bytes" in caplog.text
    np.testing.assert_array_equal(rec.read(0, 1000), iq)  # fewer than asked: the recording ends
    rec.close()


@settings(max_examples=20, deadline=None)
@given(chunk=st.integers(1, 700), start=st.integers(0, 600), length=st.integers(0, 700))
def test_chunking_never_changes_the_samples(tmp_path_factory, chunk: int, start: int, length: int) -> None:
    path = tmp_path_factory.getbasetemp() / "chunks.ci16"
    if not path.exists():
        np.random.default_rng(2).integers(-30000, 30000, 2 * 600).astype("<i2").tofile(path)
    with open_recording(path, format="ci16", fs_hz=1e6) as rec:
        whole = rec.read(0, rec.n_samples)
        pieces = list(rec.iter_chunks(chunk, start=start, stop=start + length))
    expect = whole[start: start + length]
    got = np.concatenate([p for _, p in pieces]) if pieces else np.zeros(0, np.complex64)
    np.testing.assert_array_equal(got, expect)
    assert [s for s, _ in pieces] == list(range(start, start + expect.size, chunk))


def test_read_validates_its_arguments_and_a_recording_pickles(tmp_path: pathlib.Path) -> None:
    iq = _rng_iq(50)
    path = tmp_path / "p.cf32"
    iq.tofile(path)
    rec = open_recording(path, format="cf32", fs_hz=250e3)
    with pytest.raises(ConfigError, match="start=-1"):
        rec.read(-1, 3)
    assert rec.read(60, 3).size == 0
    assert rec.duration_s == pytest.approx(50 / 250e3)
    rec.read(0, 1)  # opens the file handle
    clone = pickle.loads(pickle.dumps(rec))  # a worker process re-opens by path
    np.testing.assert_array_equal(clone.read(10, 5), iq[10:15])
    rec.close()
    np.testing.assert_array_equal(rec.read(0, 2), iq[:2])  # re-opens after close
    rec.close()
    clone.close()


# -- SigMF ---------------------------------------------------------------------------------------------------


def _sigmf_pair(tmp_path: pathlib.Path, comps: np.ndarray, glob: dict, name: str = "rec",
                captures: list | None = None, annotations: list | None = None) -> pathlib.Path:
    meta = {"global": {"core:version": "1.0.0", **glob}, "captures": captures or [{"core:sample_start": 0}],
            "annotations": annotations or []}
    (tmp_path / f"{name}.sigmf-data").write_bytes(np.ascontiguousarray(comps).tobytes())
    p = tmp_path / f"{name}.sigmf-meta"
    p.write_text(json.dumps(meta))
    return p


def test_sigmf_datatypes_capture_time_and_byte_order(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(3)
    ints = rng.integers(-32768, 32768, 400)
    cases = {
        "ci16_le": (ints.astype("<i2"), ints / 32768.0),
        "ci16_be": (ints.astype(">i2"), ints / 32768.0),
        "cu8": ((ints & 0xFF).astype(np.uint8), ((ints & 0xFF) - 127.5) / 127.5),
        "ci8": ((ints >> 8).astype(np.int8), (ints >> 8) / 128.0),
        "cf64_le": (ints.astype("<f8") / 7, ints / 7.0),
        "ci32_le": ((ints * 65536).astype("<i4"), ints / 32768.0),
    }
    cap = {"core:sample_start": 0, "core:frequency": 433.92e6,
           "core:datetime": "2025-04-11T16:04:15.123456789Z"}
    for datatype, (comps, vals) in cases.items():
        glob = {"core:datatype": datatype, "core:sample_rate": 500e3}
        p = _sigmf_pair(tmp_path, comps, glob, datatype, [cap])
        with open_recording(p) as rec:
            assert rec.datatype == datatype and rec.fs_hz == 500e3 and rec.center_freq_hz == 433.92e6
            assert rec.start_time == dt.datetime(2025, 4, 11, 16, 4, 15, 123456, tzinfo=dt.timezone.utc)
            # the float32 nearest to the exact value (cf64 rounded once, cu8 through a float64 table, the rest
            # scaled by powers of two): relative error <= 2**-24 = 6e-8
            np.testing.assert_allclose(rec.read(0, 200), vals[0::2] + 1j * vals[1::2], rtol=1e-6, atol=1e-7,
                                       err_msg=datatype)


def test_sigmf_archive_plain_and_gzipped_read_like_the_pair(tmp_path: pathlib.Path) -> None:
    iq = _rng_iq(3000)
    ann = [{"core:sample_start": 100, "core:sample_count": 50, "core:label": "dev3"}]
    meta_path = _sigmf_pair(tmp_path, iq, {"core:datatype": "cf32_le", "core:sample_rate": 1e6}, "rec",
                            annotations=ann)
    for mode, name in (("w", "rec.sigmf"), ("w:gz", "rec.sigmf.gz")):
        arch = tmp_path / name
        with tarfile.open(arch, mode, format=tarfile.PAX_FORMAT) as tar:
            tar.add(meta_path, arcname="rec/rec.sigmf-meta")
            tar.add(meta_path.with_suffix(".sigmf-data"), arcname="rec/rec.sigmf-data")
        with open_recording(arch) as rec:
            assert rec.kind == "sigmf-archive" and rec.n_samples == 3000
            assert rec.annotations[0]["core:label"] == "dev3"
            np.testing.assert_array_equal(np.concatenate([c for _, c in rec.iter_chunks(777)]), iq)
            np.testing.assert_array_equal(rec.read(2990, 20), iq[2990:])


def test_sigmf_without_rate_needs_fs_hz_and_explicit_values_must_agree(tmp_path: pathlib.Path) -> None:
    p = _sigmf_pair(tmp_path, _rng_iq(10), {"core:datatype": "cf32_le"})
    with pytest.raises(ConfigError, match="no sample rate"):
        open_recording(p)
    assert open_recording(p, fs_hz=2e6).fs_hz == 2e6
    q = _sigmf_pair(tmp_path, _rng_iq(10), {"core:datatype": "cf32_le", "core:sample_rate": 1e6}, "q")
    with pytest.raises(ConfigError, match="fs_hz=2e\\+06 contradicts"):
        open_recording(q, fs_hz=2e6)
    with pytest.raises(ConfigError, match="stores cf32_le"):
        open_recording(q, format="cu8")


@pytest.mark.parametrize(
    ("meta_text", "problem"),
    [
        ('{"global": {"core:datatype": "cf32_le"', "not valid JSON"),
        ('{"global": {"core:sample_rate": 1e6}, "captures": []}', "no core:datatype"),
        ('{"global": {"core:datatype": "cq12_le"}}', "unsupported datatype 'cq12_le'"),
        ('{"global": {"core:datatype": "rf32_le"}}', "real-valued"),
        ('{"captures": []}', "no 'global' object"),
        ('{"global": {"core:datatype": "cf32_le", "core:sample_rate": "fast"}}', "not a number"),
        ('{"global": {"core:datatype": "cf32_le", "core:num_channels": 2}}', "num_channels=2"),
        ('{"global": {"core:datatype": "cf32_le"}, "captures": [{"core:datetime": "yesterday"}]}',
         "not an ISO-8601"),
    ],
)
def test_broken_sigmf_metadata_is_an_input_error_naming_the_file(tmp_path, meta_text, problem) -> None:
    meta = tmp_path / "bad.sigmf-meta"
    meta.write_text(meta_text)
    _rng_iq(4).tofile(tmp_path / "bad.sigmf-data")
    with pytest.raises(InputDataError, match=problem) as info:
        open_recording(meta, fs_hz=1e6)
    assert str(info.value).startswith(str(meta))


def test_sigmf_missing_data_file_and_broken_archive(tmp_path: pathlib.Path) -> None:
    p = _sigmf_pair(tmp_path, _rng_iq(4), {"core:datatype": "cf32_le", "core:sample_rate": 1e6})
    p.with_suffix(".sigmf-data").unlink()
    with pytest.raises(InputDataError, match=r"rec\.sigmf-data: no such file"):
        open_recording(p)
    with pytest.raises(InputDataError, match="no such file"):
        open_recording(tmp_path / "nothing.sigmf-meta")
    junk = tmp_path / "junk.sigmf"
    junk.write_bytes(b"\x00not a tar file" * 10)
    with pytest.raises(InputDataError, match="junk.sigmf"):
        open_recording(junk)


# -- WAV -----------------------------------------------------------------------------------------------------


def test_wav_16bit_and_float_and_auxi_centre_frequency(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(4)
    ints = rng.integers(-32768, 32768, 2 * 500).astype("<i2")
    systime = struct.pack("<8H", 2025, 4, 5, 11, 16, 4, 15, 250)
    auxi = systime + systime + struct.pack("<5I", 433_014_075, 0, 0, 0, 0)
    _write_wav(tmp_path / "s16.wav", ints, tag=1, bits=16, rate=250_000,
               extra_chunks=b"auxi" + struct.pack("<I", len(auxi)) + auxi)
    with open_recording(tmp_path / "s16.wav") as rec:
        assert rec.datatype == "ci16_le" and rec.fs_hz == 250_000.0 and rec.n_samples == 500
        assert rec.center_freq_hz == 433_014_075.0
        assert rec.start_time == dt.datetime(2025, 4, 11, 16, 4, 15, 250_000, tzinfo=dt.timezone.utc)
        # exact: int16 * 2**-15 is a float32 without rounding
        np.testing.assert_array_equal(rec.read(0, 500), (ints[0::2] + 1j * ints[1::2]) / 32768.0)
    floats = rng.standard_normal(2 * 300).astype("<f4")
    _write_wav(tmp_path / "f32.wav", floats, tag=3, bits=32)
    with open_recording(tmp_path / "f32.wav", center_freq_hz=868e6) as rec:
        assert rec.datatype == "cf32_le" and rec.center_freq_hz == 868e6
        np.testing.assert_array_equal(rec.read(0, 300), floats.view(np.complex64))


def test_wav_that_is_not_two_channel_iq_is_refused(tmp_path: pathlib.Path) -> None:
    _write_wav(tmp_path / "mono.wav", np.zeros(100, "<i2"), tag=1, bits=16, n_ch=1)
    with pytest.raises(InputDataError, match=r"mono\.wav: WAV file has 1 channel\(s\)"):
        open_recording(tmp_path / "mono.wav")
    _write_wav(tmp_path / "three.wav", np.zeros(99, "<i2"), tag=1, bits=16, n_ch=3)
    with pytest.raises(InputDataError, match="has 3 channel"):
        open_recording(tmp_path / "three.wav")
    _write_wav(tmp_path / "s24.wav", np.zeros(96, np.uint8), tag=1, bits=24)
    with pytest.raises(InputDataError, match="24 bits is not supported"):
        open_recording(tmp_path / "s24.wav")
    (tmp_path / "short.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt \x10\x00")
    with pytest.raises(InputDataError, match="short.wav"):
        open_recording(tmp_path / "short.wav")


def test_truncated_wav_reads_what_is_there(tmp_path: pathlib.Path, caplog) -> None:
    comps = np.arange(200, dtype=np.uint8)
    path = tmp_path / "cut.wav"
    _write_wav(path, comps, tag=1, bits=8)
    path.write_bytes(path.read_bytes()[:-51])  # 100 samples declared, 74.5 present
    with caplog.at_level(logging.WARNING):
        rec = open_recording(path)
    assert rec.n_samples == 74 and rec.n_dropped_bytes == 1
    assert "declares 200 bytes, 149 present" in caplog.text
    expect = (comps[0:148:2] - 127.5 + 1j * (comps[1:148:2] - 127.5)) / 127.5
    np.testing.assert_allclose(rec.read(0, 100), expect, rtol=1e-6)  # cu8 table: <= 2**-24 relative
    rec.close()


def test_iterating_a_large_recording_keeps_memory_flat(tmp_path: pathlib.Path) -> None:
    import psutil

    path = tmp_path / "big.cu8"
    block = np.random.default_rng(8).integers(0, 256, 8 << 20, dtype=np.uint8)
    with open(path, "wb") as fh:
        for _ in range(10):  # 80 MB, 40 M samples (320 MB as complex64)
            block.tofile(fh)
    del block
    proc = psutil.Process()
    with open_recording(path, format="cu8", fs_hz=2.4e6) as rec:
        before = proc.memory_info().rss
        peak, total, last = 0, 0, None
        for start, chunk in rec.iter_chunks(1 << 20):
            total += chunk.size
            last = (start, chunk[-1])
            peak = max(peak, proc.memory_info().rss - before)
    assert total == 40 << 20 and last[0] == (40 << 20) - (1 << 20)
    assert peak < 64e6, f"resident memory grew by {peak / 1e6:.0f} MB while streaming"
