"""``lora-rffi detect`` in-process: raw, WAV and real files, JSON and table output, errors."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from scipy.io import wavfile

from lorarffi.cli import main
from lorarffi.dsp import LoRaConfig, packet_waveform

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
CFG = LoRaConfig(sf=7, bw_hz=125e3, fs_hz=1e6)
STARTS = (20_000, 90_000)
CFOS = (3_000.0, -11_000.0)


def _stream() -> np.ndarray:
    rng = np.random.default_rng(3)
    iq = np.zeros(150_000, np.complex64)
    for s, c in zip(STARTS, CFOS, strict=True):
        pk = packet_waveform(CFG, rng.integers(0, 128, 10), cfo_hz=c, sync_word=0x34)
        iq[s : s + pk.size] += 0.5 * pk
    iq += (0.05 * (rng.standard_normal(iq.size) + 1j * rng.standard_normal(iq.size))).astype(np.complex64)
    return iq


def test_detect_raw_cf32_json(tmp_path, capsys):
    iq = _stream()
    iq[:7] = np.nan
    path = tmp_path / "cap.cf32"
    iq.tofile(path)
    rc = main(["detect", str(path), "--format", "cf32", "--fs-hz", "1M", "--json", "--chunk-samples", "7777"])
    out, err = capsys.readouterr()
    assert rc == 0
    *rows, summary = [json.loads(line) for line in out.splitlines()]  # --json: records, then the summary
    assert summary["type"] == "summary" and summary["n_packets"] == 2 and summary["sf"] == 7
    assert [r["start"] for r in rows] == list(STARTS)
    np.testing.assert_allclose([r["cfo_hz"] for r in rows], CFOS, atol=5.0)
    assert all(r["sync_word"] == 0x34 and r["n_preamble_symbols"] == 8 for r in rows)
    assert {"start", "cfo_hz", "snr_db", "fingerprint_start", "power_db", "start_s"} <= set(rows[0])
    assert rows[0]["start_s"] == pytest.approx(STARTS[0] / 1e6, abs=1e-6)
    assert "2 packet(s) in 150000 samples" in err and "7 non-finite" in err


def test_detect_wav_table_reads_the_rate_from_the_header(tmp_path, capsys):
    iq = _stream()
    path = tmp_path / "cap.wav"
    stereo = np.stack([iq.real, iq.imag], axis=1).astype(np.float32)
    wavfile.write(path, 1_000_000, stereo)
    assert main(["detect", str(path)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["start", "start_s", "cfo_hz"]
    assert [int(line.split()[0]) for line in lines[1:]] == list(STARTS)
    assert "0x34" in lines[1]
    assert "2 packet(s)" in err


def test_detect_wrong_settings_find_nothing(tmp_path, capsys):
    path = tmp_path / "cap.cf32"
    _stream().tofile(path)
    assert main(["detect", str(path), "--format", "cf32", "--fs-hz", "1M", "--sf", "8", "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)  # --json: no packet record, the summary object
    assert summary["type"] == "summary" and summary["n_packets"] == 0 and "0 packet(s)" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["detect", "{missing}", "--format", "cf32", "--fs-hz", "1M"], "missing.cf32"),
        (["detect", "{raw}", "--format", "cf32", "--fs-hz", "1M", "--bw-hz", "300k"], "bw_hz=300000"),
        (["detect", "{raw}", "--format", "cf32", "--fs-hz", "1M", "--chunk-samples", "0"], "--chunk-samples"),
    ],
)
def test_detect_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    raw = tmp_path / "cap.cf32"
    _stream()[:1000].tofile(raw)
    argv = [a.format(missing=tmp_path / "missing.cf32", raw=raw) for a in argv]
    assert main(argv) == 2
    _out, err = capsys.readouterr()
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.skipif(not (DATA / "oat4cat_lora433_sf11_bw500").is_dir(), reason="../shared/data is absent")
def test_detect_real_wav_file(capsys):
    path = DATA / "oat4cat_lora433_sf11_bw500" / "oat4cat_signal_0000.wav"
    assert main(["-q", "detect", str(path), "--sf", "11", "--bw-hz", "500k", "--json"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[-1]["type"] == "summary" and rows[-1]["n_packets"] == 1  # --json: records, then the summary
    rows = rows[:-1]
    assert len(rows) == 1 and abs(rows[0]["start"] - 105339) <= 2
    assert rows[0]["cfo_hz"] == pytest.approx(-17590.0, abs=50.0)
    assert err == ""
